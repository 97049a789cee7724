//! `corral config edit`: the definition in $EDITOR, like `virsh edit`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::Command;

use anyhow::{bail, Context};

/// Opens `text` in the user's editor until `parse` accepts the result; returns `None` when it was
/// not changed. On a parse error the user is asked whether to edit again (virsh's behaviour).
pub fn edit_until_valid<T>(
    text: &str,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_string());
    let mut file = tempfile::Builder::new()
        .prefix("corral-")
        .suffix(".toml")
        .tempfile()?;
    file.write_all(text.as_bytes())?;
    file.flush()?;
    loop {
        // The editor may be a command with arguments, as in `EDITOR="code --wait"`.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(file.path())
            .status()
            .with_context(|| format!("cannot run the editor {editor:?}"))?;
        if !status.success() {
            bail!("the editor {editor:?} failed ({status}); nothing was changed");
        }
        let edited = std::fs::read_to_string(file.path())?;
        if edited == text {
            return Ok(None);
        }
        match parse(&edited) {
            Ok(value) => return Ok(Some(value)),
            Err(err) => {
                eprintln!("corral: {err:#}");
                if !std::io::stdin().is_terminal() {
                    bail!("the edited definition is invalid; nothing was changed");
                }
                eprint!("Edit again? [Y/n] ");
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if answer.trim().eq_ignore_ascii_case("n") {
                    bail!("nothing was changed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_editor_changes_are_parsed() {
        // An "editor" that rewrites the file non-interactively.
        std::env::set_var("VISUAL", "sed -i s/one/two/");
        let result = edit_until_valid("value = one\n", |t| Ok(t.to_string())).unwrap();
        assert_eq!(result.as_deref(), Some("value = two\n"));
        std::env::set_var("VISUAL", "true");
        let unchanged = edit_until_valid("value = one\n", |t| Ok(t.to_string())).unwrap();
        assert_eq!(unchanged, None);
    }
}
