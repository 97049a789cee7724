//! `fsfreeze`/`thaw` through the agent's unix socket: the request/reply plumbing with a fake
//! freezer, and (as root) a real freeze of an ext4 filesystem the test makes and loop-mounts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_agent::server::freeze::{Freezer, Kernel, AUTO_THAW};
use corral_agent::server::{self, Agent, Listener};
use corral_agent::{Client, ClientError, Transport};

const TIMEOUT: Duration = Duration::from_secs(10);

fn agent(dir: &Path, freezer: Box<dyn Freezer>) -> Transport {
    let socket = dir.join("agent.sock");
    let listener = Listener::unix(&socket).unwrap();
    let agent = Agent::with(freezer, AUTO_THAW, dir.to_path_buf());
    std::thread::spawn(move || server::serve(&listener, &agent));
    Transport::Unix(socket)
}

const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
28 22 0:25 / /run rw,nosuid,nodev,noexec,relatime shared:10 - tmpfs tmpfs rw,size=800k
30 22 253:3 / /srv rw,relatime shared:31 - xfs /dev/vdb rw,attr2
";

/// Records freezes and thaws of the fixture's filesystems.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Vec<String>>>);

impl Freezer for Fake {
    fn mountinfo(&self) -> std::io::Result<String> {
        Ok(MOUNTINFO.to_string())
    }
    fn freeze(&self, mountpoint: &Path) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("freeze {}", mountpoint.display()));
        Ok(())
    }
    fn thaw(&self, mountpoint: &Path) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("thaw {}", mountpoint.display()));
        Ok(())
    }
}

#[test]
fn freeze_and_thaw_report_the_mountpoints_and_a_second_freeze_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let transport = agent(dir.path(), Box::new(fake.clone()));
    let mut client = Client::connect(&transport, TIMEOUT).unwrap();
    assert_eq!(client.freeze().unwrap(), ["/", "/srv"]);
    let err = Client::connect(&transport, TIMEOUT)
        .unwrap()
        .freeze()
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("frozen already")),
        "{err}"
    );
    assert_eq!(client.thaw().unwrap(), ["/srv", "/"]);
    assert_eq!(
        *fake.0.lock().unwrap(),
        ["freeze /", "freeze /srv", "thaw /srv", "thaw /"]
    );
    assert!(client.thaw().unwrap().is_empty());
}

/// The real kernel, on the filesystems mounted at `only` (never the test machine's own).
struct KernelAt(PathBuf);

impl Freezer for KernelAt {
    fn mountinfo(&self) -> std::io::Result<String> {
        let mountpoint = format!(" {} ", self.0.display());
        Ok(Kernel
            .mountinfo()?
            .lines()
            .filter(|line| line.contains(&mountpoint))
            .map(|line| format!("{line}\n"))
            .collect())
    }
    fn freeze(&self, mountpoint: &Path) -> std::io::Result<()> {
        assert_eq!(mountpoint, self.0);
        Kernel.freeze(mountpoint)
    }
    fn thaw(&self, mountpoint: &Path) -> std::io::Result<()> {
        Kernel.thaw(mountpoint)
    }
}

/// A loop-mounted ext4 image, unmounted and detached when dropped.
struct LoopMount {
    mountpoint: PathBuf,
    device: String,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_real_freeze_holds_writes_until_the_thaw() {
    corral_testkit::require_root!();
    corral_testkit::require_program!("mkfs.ext4");
    corral_testkit::require_program!("losetup");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let device = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
    let mount = LoopMount {
        mountpoint: mountpoint.clone(),
        device: device.clone(),
    };
    run("mount", &[&device, mountpoint.to_str().unwrap()]);

    let transport = agent(dir.path(), Box::new(KernelAt(mountpoint.clone())));
    let mut client = Client::connect(&transport, TIMEOUT).unwrap();
    assert_eq!(client.freeze().unwrap(), [mountpoint.display().to_string()]);
    let (done, written) = mpsc::channel();
    let file = mountpoint.join("written-while-frozen");
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_all().unwrap();
        done.send(()).unwrap();
    });
    assert!(
        written.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a write completed on a frozen filesystem"
    );
    assert_eq!(client.thaw().unwrap(), [mountpoint.display().to_string()]);
    written
        .recv_timeout(Duration::from_secs(10))
        .expect("the write completes after the thaw");
    assert_eq!(
        std::fs::read(mountpoint.join("written-while-frozen")).unwrap(),
        b"hello"
    );
    drop(mount);
}
