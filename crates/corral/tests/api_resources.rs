//! The root's other resources through the CLI and through `corral serve`: one scenario of
//! volume, snapshot, image and network verbs (and the refusals between them) run once by each
//! front end, on roots of their own, gives the same outcome at every step and the same lists.

use std::path::Path;

use corral_testkit::{require_program, require_root, Netns};
use serde_json::{json, Value};

mod common;

use common::serve::Server;

/// One step of the scenario.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    VolumeCreate {
        name: &'a str,
        size: Option<&'a str>,
        format: &'a str,
        backing: Option<&'a str>,
    },
    VolumeResize(&'a str, &'a str),
    VolumeDelete(&'a str),
    SnapshotCreate(&'a str, &'a str),
    SnapshotRestore(&'a str, &'a str),
    SnapshotDelete(&'a str, &'a str),
    ImageDelete(&'a str),
    NetworkCreate(&'a str, &'a str),
    NetworkDelete(&'a str),
}

trait Frontend {
    /// Ok, or the error's first sentence.
    fn step(&self, step: Step) -> Result<(), String>;
    /// The volumes, an instance's snapshots, the images and the networks, as listed.
    fn lists(&self) -> Value;
}

struct Cli<'a>(&'a common::CorralRoot);

impl Frontend for Cli<'_> {
    fn step(&self, step: Step) -> Result<(), String> {
        let args: Vec<&str> = match step {
            Step::VolumeCreate {
                name,
                size,
                format,
                backing,
            } => {
                let mut args = vec!["volume", "create", name, "--format", format];
                args.extend(size.map(|size| ["--size", size]).into_iter().flatten());
                args.extend(backing.map(|b| ["--backing", b]).into_iter().flatten());
                args
            }
            Step::VolumeResize(name, size) => vec!["volume", "resize", name, size],
            Step::VolumeDelete(name) => vec!["volume", "delete", name],
            Step::SnapshotCreate(name, snapshot) => vec!["snapshot", "create", name, snapshot],
            Step::SnapshotRestore(name, snapshot) => vec!["snapshot", "restore", name, snapshot],
            Step::SnapshotDelete(name, snapshot) => vec!["snapshot", "delete", name, snapshot],
            Step::ImageDelete(image) => vec!["image", "delete", image],
            Step::NetworkCreate(name, subnet) => {
                vec!["network", "create", name, "--subnet", subnet]
            }
            Step::NetworkDelete(name) => vec!["network", "delete", name],
        };
        self.0.outcome(&args)
    }

    fn lists(&self) -> Value {
        let list = |args: &[&str]| -> Value {
            serde_json::from_str(&self.0.ok(&[args, &["-o", "json"]].concat())).unwrap()
        };
        json!({
            "volumes": list(&["volume", "list"]),
            "snapshots": list(&["snapshot", "list", "box"]),
            "images": list(&["image", "list"]),
            "networks": list(&["network", "list"]),
        })
    }
}

impl Frontend for Server {
    fn step(&self, step: Step) -> Result<(), String> {
        let (method, path, body) = match step {
            Step::VolumeCreate {
                name,
                size,
                format,
                backing,
            } => (
                "POST",
                "/1.0/volumes".to_owned(),
                Some(json!({"name": name, "size": size, "format": format, "backing": backing})),
            ),
            Step::VolumeResize(name, size) => (
                "PUT",
                format!("/1.0/volumes/{name}"),
                Some(json!({"size": size})),
            ),
            Step::VolumeDelete(name) => ("DELETE", format!("/1.0/volumes/{name}"), None),
            Step::SnapshotCreate(name, snapshot) => (
                "POST",
                format!("/1.0/instances/{name}/snapshots"),
                Some(json!({"name": snapshot})),
            ),
            Step::SnapshotRestore(name, snapshot) => (
                "POST",
                format!("/1.0/instances/{name}/snapshots/{snapshot}/restore"),
                None,
            ),
            Step::SnapshotDelete(name, snapshot) => (
                "DELETE",
                format!("/1.0/instances/{name}/snapshots/{snapshot}"),
                None,
            ),
            Step::ImageDelete(image) => ("DELETE", format!("/1.0/images/{image}"), None),
            Step::NetworkCreate(name, subnet) => (
                "POST",
                "/1.0/networks".to_owned(),
                Some(json!({"name": name, "subnet": subnet})),
            ),
            Step::NetworkDelete(name) => ("DELETE", format!("/1.0/networks/{name}"), None),
        };
        let body = body.map(|body| body.to_string());
        let (status, text) =
            corral_testkit::http::request(&self.socket, method, &path, body.as_deref());
        match status {
            200 | 201 | 204 => Ok(()),
            202 => self.outcome((status, serde_json::from_str(&text).unwrap())),
            _ => {
                let answer: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {text}"));
                Err(answer["error"].as_str().unwrap().to_owned())
            }
        }
    }

    fn lists(&self) -> Value {
        let list = |path: &str| -> Value {
            let (status, list) = self.call("GET", path, None);
            assert_eq!(status, 200, "{path}: {list}");
            list
        };
        json!({
            "volumes": list("/1.0/volumes"),
            "snapshots": list("/1.0/instances/box/snapshots"),
            "images": list("/1.0/images"),
            "networks": list("/1.0/networks"),
        })
    }
}

/// What differs between two roots by nature: their paths, when things were made, and so the
/// published images' bytes.
fn comparable(lists: Value, root: &Path) -> Value {
    let text = lists.to_string().replace(root.to_str().unwrap(), "ROOT");
    let mut lists: Value = serde_json::from_str(&text).unwrap();
    for image in lists["images"].as_array_mut().unwrap() {
        image["created"] = Value::Null;
        image["imported_at"] = Value::Null;
        // A publish packs files' times, so two roots' images differ by their bytes.
        image["fingerprint"] = Value::Null;
    }
    for snapshot in lists["snapshots"].as_array_mut().unwrap() {
        snapshot["created"] = Value::Null;
    }
    for volume in lists["volumes"].as_array_mut().unwrap() {
        volume["actual_size"] = Value::Null;
    }
    lists
}

/// The scenario, through `front`, from a root holding a stopped container `box` and an image
/// `img` made of it; the outcome of each step.
fn scenario(front: &dyn Frontend) -> Vec<(String, Result<(), String>)> {
    let raw = |name, size| Step::VolumeCreate {
        name,
        size,
        format: "raw",
        backing: None,
    };
    let steps = [
        raw("data", Some("1M")),
        raw("nosize", None),
        raw("data", Some("1M")),
        Step::VolumeCreate {
            name: "overlay",
            size: None,
            format: "qcow2",
            backing: Some("data"),
        },
        Step::VolumeCreate {
            name: "wrong",
            size: Some("1M"),
            format: "raw",
            backing: Some("data"),
        },
        Step::VolumeResize("overlay", "4M"),
        Step::VolumeResize("missing", "4M"),
        Step::VolumeDelete("data"),
        Step::VolumeDelete("overlay"),
        Step::VolumeDelete("overlay"),
        Step::VolumeDelete("data"),
        Step::SnapshotCreate("box", "s1"),
        Step::SnapshotCreate("box", "s1"),
        Step::SnapshotCreate("box", "s2"),
        Step::SnapshotRestore("box", "s1"),
        Step::SnapshotRestore("box", "nope"),
        Step::SnapshotDelete("box", "s1"),
        Step::SnapshotDelete("box", "s1"),
        Step::SnapshotCreate("ghost", "s1"),
        Step::ImageDelete("nothing"),
        Step::NetworkCreate("lan", "10.77.0.1/24"),
        Step::NetworkCreate("lan", "10.78.0.1/24"),
        Step::NetworkCreate("bad.name", "10.79.0.1/24"),
        Step::NetworkDelete("lan"),
        Step::NetworkDelete("lan"),
    ];
    steps
        .into_iter()
        .map(|step| (format!("{step:?}"), front.step(step)))
        .collect()
}

/// A root in `net` with a stopped container `box` and an image `img` published from it.
fn prepared_root(net: &Netns) -> common::CorralRoot {
    let root = common::CorralRoot::in_netns(net);
    let rootfs = common::busybox_rootfs(root.dir.path());
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "sleep", "1000"]);
    root.ok(&["publish", "box", "--alias", "img"]);
    root
}

#[test]
fn volume_snapshot_image_and_network_verbs_give_the_same_outcomes_through_the_cli_and_the_api() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    if !common::have_busybox() {
        return;
    }
    let net = Netns::new("api-res");
    net.ip(&["link", "set", "lo", "up"]);
    let (by_cli, by_api) = (prepared_root(&net), prepared_root(&net));
    let server = Server::start(&by_api);

    let cli = scenario(&Cli(&by_cli));
    let cli_lists = comparable(Cli(&by_cli).lists(), &by_cli.path());
    let api = scenario(&server);
    let api_lists = comparable(server.lists(), &by_api.path());

    for ((step, cli), (_, api)) in cli.iter().zip(&api) {
        match (cli, api) {
            (Ok(()), Ok(())) => {}
            // The API's sentence is the whole chain; the CLI's first line is its head.
            (Err(cli), Err(api)) => assert!(
                api.starts_with(cli.as_str()),
                "{step}: the CLI said {cli:?}, the API {api:?}"
            ),
            _ => panic!("{step}: the CLI gave {cli:?}, the API {api:?}"),
        }
    }
    let failed: Vec<&str> = (cli.iter())
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(step, _)| step.as_str())
        .collect();
    assert_eq!(
        failed.len(),
        14,
        "the refusals the scenario has: {failed:#?}"
    );
    assert_eq!(cli_lists, api_lists);
    assert_eq!(
        cli_lists["snapshots"].as_array().unwrap().len(),
        1,
        "{cli_lists}"
    );
    assert_eq!(cli_lists["volumes"], json!([]), "{cli_lists}");

    // The image goes alike, and the lists agree again.
    let (cli, api) = (Cli(&by_cli), &server);
    cli.step(Step::ImageDelete("img")).unwrap();
    api.step(Step::ImageDelete("img")).unwrap();
    assert_eq!(
        comparable(cli.lists(), &by_cli.path()),
        comparable(api.lists(), &by_api.path())
    );
}

#[test]
fn images_upload_and_download_as_the_cli_imports_and_exports_them() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "sleep", "1000"]);
    root.ok(&["publish", "box", "--alias", "img"]);
    let server = Server::start(&root);
    let files = tempfile::tempdir().unwrap();
    let get = |path: &str| {
        corral_testkit::http::request_bytes(&server.socket, "GET", path, "text/plain", b"")
    };

    // Downloads are the CLI's exports, byte for byte.
    for format in ["rootfs", "incus", "oci-archive"] {
        let by_cli = files.path().join(format!("img.{format}"));
        root.ok(&[
            "image",
            "export",
            "img",
            by_cli.to_str().unwrap(),
            "--format",
            format,
        ]);
        let (status, by_api) = get(&format!("/1.0/images/img/export?format={format}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&by_api));
        assert!(
            std::fs::read(&by_cli).unwrap() == by_api,
            "{format} exports differ"
        );
    }
    let (status, refused) = get("/1.0/images/img/export?format=oci");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&refused).contains("is a directory"));
    let (status, refused) = get("/1.0/images/img/export?format=qcow2");
    assert_eq!(status, 400, "a container image has no disk");
    assert!(String::from_utf8_lossy(&refused).contains("cannot be exported as qcow2"));

    // An upload is the CLI's import: the same image, named; once more it is already stored.
    let (_, incus) = get("/1.0/images/img/export?format=incus");
    let upload = |query: &str, body: &[u8]| {
        let path = format!("/1.0/images{query}");
        let (status, answer) = corral_testkit::http::request_bytes(
            &server.socket,
            "POST",
            &path,
            "application/octet-stream",
            body,
        );
        (status, serde_json::from_slice::<Value>(&answer).unwrap())
    };
    root.ok(&["image", "delete", "img"]);
    let (status, image) = upload("?alias=again&description=uploaded", &incus);
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["aliases"], json!(["again"]));
    let by_cli = files.path().join("img.incus");
    let imported: Value = serde_json::from_str(&root.ok(&[
        "image",
        "import",
        by_cli.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        image["fingerprint"], imported["fingerprint"],
        "one image either way"
    );
    let (status, again) = upload("", &incus);
    assert_eq!(
        (status, &again["fingerprint"]),
        (200, &image["fingerprint"])
    );

    // What is not an image, or a query that does not fit, is refused and leaves nothing.
    let (status, refused) = upload("?format=rootfs", b"not a tarball at all");
    assert_eq!(status, 400, "{refused}");
    let (status, refused) = upload("?format=iso", &incus);
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("is not an import format"));
    let litter: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload-") || name.starts_with(".export-"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
    let listed: Value = serde_json::from_str(&root.ok(&["image", "list", "-o", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[test]
fn an_instances_config_changes_alike_through_the_cli_and_the_api() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    for name in ["by-cli", "by-api"] {
        root.ok(&["create", name, "--rootfs", rootfs, "--", "sleep", "1000"]);
    }
    let server = Server::start(&root);
    let definition = |name: &str| {
        let (status, instance) = server.call("GET", &format!("/1.0/instances/{name}"), None);
        assert_eq!(status, 200, "{instance}");
        let mut definition = instance["definition"].clone();
        for field in ["name", "uuid"] {
            definition[field] = Value::Null;
        }
        serde_json::from_str::<Value>(&definition.to_string().replace(name, "NAME")).unwrap()
    };

    // Settings: the same definition either way, and the same refusal of a bad one.
    root.ok(&[
        "config",
        "set",
        "by-cli",
        "memory=512M",
        "cpus=2",
        "limits.pids=50",
    ]);
    let patch = json!({"settings": {"memory": "512M", "cpus": "2", "limits.pids": "50"}});
    let (status, patched) = server.call("PATCH", "/1.0/instances/by-api", Some(patch));
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["definition"]["memory"], "512M", "{patched}");
    assert_eq!(definition("by-cli"), definition("by-api"));
    let refused_cli = root
        .outcome(&["config", "set", "by-cli", "cpus=lots"])
        .unwrap_err();
    let patch = json!({"settings": {"cpus": "lots"}});
    let (status, refused_api) = server.call("PATCH", "/1.0/instances/by-api", Some(patch));
    assert_eq!(status, 400, "{refused_api}");
    assert!(
        refused_api["error"]
            .as_str()
            .unwrap()
            .starts_with(&refused_cli),
        "{refused_cli:?} / {refused_api}"
    );
    assert_eq!(
        definition("by-cli"),
        definition("by-api"),
        "a refusal changes nothing"
    );

    // A whole definition replaced, keeping what makes the instance itself.
    let toml = root.ok(&["config", "show", "by-api"]);
    let bigger = toml.replace("cpus = 2", "cpus = 3");
    assert_ne!(bigger, toml, "{toml}");
    let (status, replaced) = server.call(
        "PUT",
        "/1.0/instances/by-api",
        Some(json!({ "definition": bigger })),
    );
    assert_eq!(status, 200, "{replaced}");
    assert!(root.ok(&["config", "show", "by-api"]).contains("cpus = 3"));
    let renamed = toml.replace("name = \"by-api\"", "name = \"other\"");
    let (status, refused) = server.call(
        "PUT",
        "/1.0/instances/by-api",
        Some(json!({ "definition": renamed })),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("the name of instance by-api cannot be changed"),
        "{refused}"
    );
    let (status, refused) = server.call(
        "PUT",
        "/1.0/instances/by-api",
        Some(json!({ "definition": "cpus = [" })),
    );
    assert_eq!(status, 400, "{refused}");
}
