//! `corral remote` (the remote servers this user knows) and `corral --remote NAME VERB`: `list`,
//! `create`, `logs`, the lifecycle verbs, `exec` and `console` (`stream`) and the resources'
//! verbs (`resources`) run against a remote `corral serve --listen` through its API, and print
//! what they print locally. Paths a `create` names (a root filesystem, a kernel) are the
//! server's; files it reads (`--file`, SSH keys, an image to import) are read here.

mod resources;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use corral_core::definition::Definition;
use corral_core::lifecycle::Summary;
use corral_core::state::State;
use corral_remote::{Client, RemoteError, Remotes};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::instance::{self, describe_exit};
use crate::output::{self, Format};
use crate::Command;

#[derive(Args)]
pub struct RemoteArgs {
    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add a remote: enrol this user's certificate with the server at ADDRESS:PORT (its
    /// `corral serve --listen`) using a join token from `corral trust add NAME` there; the
    /// server is pinned by the fingerprint the token carries.
    Add {
        name: String,
        address: String,
        token: String,
    },
    /// List the remotes.
    #[command(alias = "ls")]
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Forget a remote (the server still trusts this user's certificate until `corral trust
    /// remove` there).
    #[command(alias = "rm")]
    Remove { name: String },
}

fn config_dir() -> anyhow::Result<PathBuf> {
    Ok(corral_remote::config_dir().ok_or(RemoteError::NoConfigDir)?)
}

pub fn run(args: RemoteArgs) -> anyhow::Result<ExitCode> {
    let dir = config_dir()?;
    let remotes = Remotes::in_dir(&dir);
    match args.command {
        RemoteCommand::Add {
            name,
            address,
            token,
        } => {
            // Refused before anything is sent when the name is taken or malformed.
            if remotes.list()?.contains_key(&name) {
                return Err(RemoteError::NameTaken(name).into());
            }
            let remote = corral_remote::client::enrol(&address, &token, &dir)
                .with_context(|| format!("cannot add remote {name}"))?;
            let fingerprint = remote.fingerprint.clone();
            remotes.add(&name, remote)?;
            println!("added remote {name} at {address} (server certificate {fingerprint})");
        }
        RemoteCommand::List { output } => {
            let list = remotes.list()?;
            if output == Format::Json {
                output::print_json(&list)?;
            } else {
                let rows: Vec<[String; 3]> = (list.iter())
                    .map(|(name, r)| [name.clone(), r.address.clone(), r.fingerprint.to_string()])
                    .collect();
                output::print_table(["NAME", "ADDRESS", "FINGERPRINT"], &rows);
            }
        }
        RemoteCommand::Remove { name } => {
            remotes.remove(&name)?;
            println!("removed remote {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `answer` read as the `T` corral serve sends as `what`.
fn decode<T: DeserializeOwned>(answer: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(answer)
        .with_context(|| format!("the remote's {what} is not what corral serve sends"))
}

/// `GET PATH`'s answer, read as the `T` corral serve sends as `what`.
fn get<T: DeserializeOwned>(client: &Client, path: &str, what: &str) -> anyhow::Result<T> {
    decode(client.call("GET", path, None)?.1, what)
}

/// The definition of instance `name` on the remote.
fn definition(client: &Client, name: &str) -> anyhow::Result<Definition> {
    let (_, answer) = client.call("GET", &format!("/1.0/instances/{name}"), None)?;
    decode(answer["definition"].clone(), "instance definition")
}

/// Runs `command` against the remote `name`.
pub fn run_on(name: &str, command: Command) -> anyhow::Result<ExitCode> {
    let dir = config_dir()?;
    let remote = Remotes::in_dir(&dir).get(name)?;
    let client = Client::new(&remote, &dir)?;
    let state_path = |instance: &str| format!("/1.0/instances/{instance}/state");
    let change = |instance: &str, body: Value| -> anyhow::Result<()> {
        Ok(client.operate("PUT", &state_path(instance), Some(&body))?)
    };
    let state_of = |instance: &str| -> anyhow::Result<State> {
        let (_, answer) = client.call("GET", &format!("/1.0/instances/{instance}"), None)?;
        decode(answer["state"].clone(), "instance state")
    };
    match command {
        Command::List(args) => {
            let summaries: Vec<Summary> = get(&client, "/1.0/instances", "instance list")?;
            instance::print_list(summaries, &args)?;
        }
        Command::Info(args) => {
            let path = format!("/1.0/instances/{}/info", args.name);
            instance::print_info(&get(&client, &path, "instance report")?, &args)?;
        }
        Command::Create(args) => {
            let (request, start) = instance::create_request(*args)?;
            let name = request.instance_name()?;
            let body = serde_json::to_value(&request)?;
            client.operate(
                "POST",
                &format!("/1.0/instances?start={start}"),
                Some(&body),
            )?;
            instance::print_created(request.image.as_deref(), &definition(&client, &name)?);
            if start {
                println!("started {name}");
            }
        }
        Command::Logs(args) => {
            if args.follow {
                bail!(
                    "corral --remote prints an instance's logs once (the API does not follow \
                     them); --follow is local: run it on the server itself"
                );
            }
            let text = client.text(&format!("/1.0/instances/{}/logs", args.name))?;
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
        }
        Command::Start { names } => {
            for instance in names {
                change(&instance, json!({"action": "start"}))?;
                let state = state_of(&instance)?;
                instance::print_started(&instance, &state);
            }
        }
        Command::Stop(args) => {
            if args.names.is_empty() {
                bail!("corral --remote stops the instances it is given, not --all; name them");
            }
            for instance in args.names {
                let body = json!({"action": "stop", "timeout": args.timeout, "force": args.force});
                change(&instance, body)?;
                println!("stopped {instance}{}", describe_exit(&state_of(&instance)?));
            }
        }
        Command::Kill { names } => {
            for instance in names {
                change(&instance, json!({"action": "kill"}))?;
                println!("killed {instance}{}", describe_exit(&state_of(&instance)?));
            }
        }
        Command::Restart(args) => {
            let body = json!({"action": "restart", "timeout": args.timeout, "force": args.force});
            change(&args.name, body)?;
            println!("restarted {}", args.name);
        }
        Command::Pause { name: instance } => {
            change(&instance, json!({"action": "pause"}))?;
            println!("paused {instance}");
        }
        Command::Resume { name: instance } => {
            change(&instance, json!({"action": "resume"}))?;
            println!("resumed {instance}");
        }
        Command::Delete(args) => {
            for instance in args.names {
                let path = format!("/1.0/instances/{instance}?force={}", args.force);
                client.operate("DELETE", &path, None)?;
                println!("deleted {instance}");
            }
        }
        Command::Exec(args) => return stream::exec(&client, args),
        Command::Console { name: instance } => return stream::console(&client, &instance),
        Command::Snapshot(args) => resources::snapshot(&client, args.command)?,
        Command::Volume(args) => resources::volume(&client, args.command)?,
        Command::Network(args) => resources::network(&client, args.command)?,
        Command::Image(args) => resources::image(&client, args.command)?,
        _ => bail!(
            "corral --remote runs list, info, create, logs, start, stop, kill, restart, pause, \
             resume, delete, exec, console, snapshot, volume, network and image; run other \
             commands on the server itself"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
