//! The part of GRUB's configuration language that says what boots: `menuentry` and `submenu`
//! blocks with their `linux` and `initrd` commands, and `set default=` (an index, a `>`-separated
//! path into submenus, a title or an entry id). Everything else (functions, conditions, variables)
//! is skipped; a word that still holds a `$variable` is dropped from a command line, since only
//! GRUB at boot could expand it.

/// A bootable entry of a grub.cfg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GrubEntry {
    pub title: String,
    /// The `linux` command's path.
    pub kernel: Option<String>,
    /// The `initrd` command's last path (earlier ones are microcode updates).
    pub initrd: Option<String>,
    /// The `linux` command's arguments.
    pub options: Vec<String>,
}

#[derive(Debug)]
enum Item {
    Entry {
        id: Option<String>,
        entry: GrubEntry,
    },
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
}

/// The entry grub.cfg boots by default: the one `set default=` names, or the first one.
/// `None` when the file has no menu entry at all (a BLS-only grub.cfg).
pub(crate) fn default_entry(text: &str) -> Option<GrubEntry> {
    let (items, default) = parse(text);
    default
        .and_then(|value| select(&items, &value))
        .or_else(|| first_entry(&items))
        .cloned()
}

fn select<'a>(items: &'a [Item], value: &str) -> Option<&'a GrubEntry> {
    let (head, rest) = match value.split_once('>') {
        Some((head, rest)) => (head, Some(rest)),
        None => (value, None),
    };
    let item = match head.trim().parse::<usize>() {
        Ok(index) => items.get(index)?,
        Err(_) => items.iter().find(|item| match item {
            Item::Entry { id, entry } => entry.title == head || id.as_deref() == Some(head),
            Item::Submenu { title, id, .. } => title == head || id.as_deref() == Some(head),
        })?,
    };
    match (item, rest) {
        (Item::Entry { entry, .. }, None) => Some(entry),
        (Item::Submenu { items, .. }, Some(rest)) => select(items, rest),
        (Item::Submenu { items, .. }, None) => first_entry(items),
        (Item::Entry { .. }, Some(_)) => None,
    }
}

fn first_entry(items: &[Item]) -> Option<&GrubEntry> {
    items.iter().find_map(|item| match item {
        Item::Entry { entry, .. } => Some(entry),
        Item::Submenu { items, .. } => first_entry(items),
    })
}

/// What a block opened by `{` is.
enum Frame {
    Entry {
        id: Option<String>,
        entry: GrubEntry,
    },
    Submenu {
        title: String,
        id: Option<String>,
        items: Vec<Item>,
    },
    /// A function body or anything else with braces: skipped.
    Other,
}

/// The menu tree and the last literal value of a top-level `set default=`.
fn parse(text: &str) -> (Vec<Item>, Option<String>) {
    let mut top: Vec<Item> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut default = None;
    for (words, end) in commands(text) {
        let in_entry = matches!(stack.last(), Some(Frame::Entry { .. }));
        match end {
            End::Open => stack.push(open_frame(&words)),
            End::Line if in_entry => {
                if let Some(Frame::Entry { entry, .. }) = stack.last_mut() {
                    entry_command(entry, &words);
                }
            }
            End::Line if stack.is_empty() => {
                if let Some(value) = set_default(&words) {
                    default = Some(value);
                }
            }
            End::Line => {}
            End::Close => {
                if in_entry {
                    if let Some(Frame::Entry { entry, .. }) = stack.last_mut() {
                        entry_command(entry, &words);
                    }
                }
                let item = match stack.pop() {
                    Some(Frame::Entry { id, entry }) => Some(Item::Entry { id, entry }),
                    Some(Frame::Submenu { title, id, items }) => {
                        Some(Item::Submenu { title, id, items })
                    }
                    Some(Frame::Other) | None => None,
                };
                let Some(item) = item else { continue };
                match stack.iter_mut().rev().find(|f| !matches!(f, Frame::Other)) {
                    Some(Frame::Submenu { items, .. }) => items.push(item),
                    // An entry inside an entry or a function: not on the menu.
                    Some(_) => {}
                    None => top.push(item),
                }
            }
        }
    }
    (top, default)
}

fn open_frame(words: &[String]) -> Frame {
    let title = words.get(1).cloned().unwrap_or_default();
    let id = words
        .iter()
        .position(|word| word == "--id" || word == "$menuentry_id_option")
        .and_then(|at| words.get(at + 1))
        .cloned();
    match words.first().map(String::as_str) {
        Some("menuentry") => Frame::Entry {
            id,
            entry: GrubEntry {
                title,
                ..GrubEntry::default()
            },
        },
        Some("submenu") => Frame::Submenu {
            title,
            id,
            items: Vec::new(),
        },
        _ => Frame::Other,
    }
}

fn entry_command(entry: &mut GrubEntry, words: &[String]) {
    let Some((command, args)) = words.split_first() else {
        return;
    };
    match command.as_str() {
        "linux" | "linux16" | "linuxefi" => {
            let mut args = args.iter().filter(|arg| !arg.starts_with("--"));
            entry.kernel = args.next().map(|path| strip_device(path));
            entry.options = args.filter(|arg| !arg.contains('$')).cloned().collect();
        }
        "initrd" | "initrd16" | "initrdefi" => {
            entry.initrd = args
                .iter()
                .rfind(|arg| !arg.starts_with("--"))
                .map(|path| strip_device(path));
        }
        _ => {}
    }
}

/// `(hd0,gpt2)/vmlinuz`, `($root)/vmlinuz` and `$root/vmlinuz` name a file on the partition
/// grub.cfg is on (the only one read here): the device part goes.
fn strip_device(path: &str) -> String {
    let path = match path.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map_or(rest, |(_, after)| after),
        None => path,
    };
    let path = path
        .strip_prefix("${root}")
        .or_else(|| path.strip_prefix("$root"))
        .unwrap_or(path);
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn set_default(words: &[String]) -> Option<String> {
    if words.first().map(String::as_str) != Some("set") {
        return None;
    }
    let value = words.get(1)?.strip_prefix("default=")?;
    (!value.contains('$')).then(|| value.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// A newline or `;`.
    Line,
    /// `{`: the words open a block.
    Open,
    /// `}`: the words end the current block.
    Close,
}

/// Splits the text into commands (lists of words with GRUB's quoting and escapes applied), each
/// with what ended it. Comments run from an unquoted `#` at a word's start to the line's end.
fn commands(text: &str) -> Vec<(Vec<String>, End)> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    let finish_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                word.push(escaped);
                            }
                        }
                        other => word.push(other),
                    }
                }
            }
            '\\' => {
                match chars.next() {
                    // A line continuation.
                    Some('\n') => {}
                    Some(escaped) => {
                        in_word = true;
                        word.push(escaped);
                    }
                    None => {}
                }
            }
            '#' if !in_word => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        break;
                    }
                }
                finish_word(&mut words, &mut word, &mut in_word);
                commands.push((std::mem::take(&mut words), End::Line));
            }
            '\n' | ';' => {
                finish_word(&mut words, &mut word, &mut in_word);
                commands.push((std::mem::take(&mut words), End::Line));
            }
            '{' if !in_word => commands.push((std::mem::take(&mut words), End::Open)),
            '}' if !in_word => commands.push((std::mem::take(&mut words), End::Close)),
            c if c.is_whitespace() => finish_word(&mut words, &mut word, &mut in_word),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    finish_word(&mut words, &mut word, &mut in_word);
    commands.push((words, End::Line));
    commands.retain(|(words, end)| !words.is_empty() || *end != End::Line);
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="0"
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-abc' {
	load_video
	insmod ext2
	search --no-floppy --fs-uuid --set=root abc
	echo	'Loading Linux 6.1.0-18-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=abc ro  quiet $vt_handoff
	initrd	/boot/intel-ucode.img /boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-abc' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --id 'gnulinux-6.1.0-18' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=abc ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-17-amd64' --id 'gnulinux-6.1.0-17' {
		linux	($root)/boot/vmlinuz-6.1.0-17-amd64 root=UUID=abc ro
		initrd	/boot/initrd.img-6.1.0-17-amd64
	}
}
"#;

    #[test]
    fn the_first_entry_of_a_debian_grub_cfg() {
        let entry = default_entry(DEBIAN).unwrap();
        assert_eq!(entry.title, "Debian GNU/Linux");
        assert_eq!(
            entry.kernel.as_deref(),
            Some("/boot/vmlinuz-6.1.0-18-amd64")
        );
        assert_eq!(
            entry.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-18-amd64")
        );
        assert_eq!(entry.options, ["root=UUID=abc", "ro", "quiet"]);
    }

    #[test]
    fn defaults_by_index_path_title_and_id() {
        for (default, kernel) in [
            ("1>1", "/boot/vmlinuz-6.1.0-17-amd64"),
            ("1", "/boot/vmlinuz-6.1.0-18-amd64"),
            (
                "gnulinux-advanced-abc>gnulinux-6.1.0-17",
                "/boot/vmlinuz-6.1.0-17-amd64",
            ),
            ("Debian GNU/Linux", "/boot/vmlinuz-6.1.0-18-amd64"),
            // Nothing by that name: the first entry, as GRUB falls back.
            ("7", "/boot/vmlinuz-6.1.0-18-amd64"),
        ] {
            let text = format!("{DEBIAN}\nset default=\"{default}\"\n");
            let entry = default_entry(&text).unwrap();
            assert_eq!(entry.kernel.as_deref(), Some(kernel), "default {default}");
        }
        let text = format!("{DEBIAN}\nset default='1>1'\n");
        assert_eq!(
            default_entry(&text).unwrap().initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-17-amd64")
        );
    }

    #[test]
    fn device_prefixes_and_relative_paths() {
        assert_eq!(strip_device("(hd0,gpt2)/vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("$root/boot/vmlinuz"), "/boot/vmlinuz");
        assert_eq!(strip_device("${root}/vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("vmlinuz"), "/vmlinuz");
    }

    #[test]
    fn no_entries_and_garbage() {
        assert_eq!(default_entry("insmod blscfg\nblscfg\n"), None);
        for text in [
            "}}}{{{",
            "menuentry",
            "menuentry 'x' {",
            "'unterminated",
            "\\",
            "{ } ; #",
        ] {
            let _ = default_entry(text);
        }
        let one_line = default_entry("menuentry 'x' { linux /k a=b; initrd /i }").unwrap();
        assert_eq!(one_line.kernel.as_deref(), Some("/k"));
        assert_eq!(one_line.initrd.as_deref(), Some("/i"));
    }
}
