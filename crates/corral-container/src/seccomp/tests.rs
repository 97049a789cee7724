use std::path::PathBuf;

use super::*;

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

/// getppid(2) refused with ENOSYS, everything else allowed.
const NO_GETPPID: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#;

/// The program's instructions as the kernel reads them, 8 bytes each.
fn bytes(program: &Program) -> Vec<u8> {
    program
        .instructions
        .iter()
        .flat_map(|i| {
            let mut raw = [0; 8];
            raw[..2].copy_from_slice(&i.code.to_ne_bytes());
            raw[2] = i.jt;
            raw[3] = i.jf;
            raw[4..].copy_from_slice(&i.k.to_ne_bytes());
            raw
        })
        .collect()
}

fn cached_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[test]
fn a_profile_is_compiled_once_into_the_cache_and_then_read_from_it() {
    let cache = tempfile::tempdir().unwrap();
    let profile = profile(NO_GETPPID);
    let compiled = compile::compile(&profile).unwrap();

    let first = Program::for_profile(&profile, Some(cache.path())).unwrap();
    assert_eq!(bytes(&first), compiled);
    let files = cached_files(cache.path());
    assert_eq!(files.len(), 1, "one file per profile: {files:?}");
    let kept = std::fs::read(&files[0]).unwrap();
    assert_eq!(
        &kept[cache::DIGEST_LEN..],
        compiled,
        "the program follows its digest"
    );

    // The second container's program is the cached one: replace the cached program by another
    // (with its digest) and that is what comes back.
    let other = compile::compile(&self::profile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#)).unwrap();
    cache::write(cache.path(), &cache::key(&profile), &other);
    let second = Program::for_profile(&profile, Some(cache.path())).unwrap();
    assert_eq!(bytes(&second), other);
}

#[test]
fn a_cached_program_that_does_not_match_its_digest_is_compiled_again_and_replaced() {
    let cache = tempfile::tempdir().unwrap();
    let profile = profile(NO_GETPPID);
    let compiled = compile::compile(&profile).unwrap();
    Program::for_profile(&profile, Some(cache.path())).unwrap();
    let file = cached_files(cache.path()).remove(0);
    let mut torn = std::fs::read(&file).unwrap();
    let last = torn.len() - 1;
    torn[last] ^= 0xff;
    std::fs::write(&file, &torn).unwrap();

    let program = Program::for_profile(&profile, Some(cache.path())).unwrap();
    assert_eq!(bytes(&program), compiled);
    assert_eq!(
        &std::fs::read(&file).unwrap()[cache::DIGEST_LEN..],
        compiled,
        "the damaged file is replaced"
    );
}

#[test]
fn an_unusable_cache_directory_only_costs_the_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let profile = profile(NO_GETPPID);
    let program = Program::for_profile(&profile, Some(&not_a_dir)).unwrap();
    assert_eq!(bytes(&program), compile::compile(&profile).unwrap());
}

#[test]
fn profiles_differing_in_anything_are_kept_apart() {
    let a = profile(NO_GETPPID);
    let b = profile(&NO_GETPPID.replace("38", "1"));
    assert_ne!(cache::key(&a), cache::key(&b));
    assert_eq!(cache::key(&a), cache::key(&profile(NO_GETPPID)));
}

#[test]
fn only_whole_programs_within_the_kernels_limit_are_instructions() {
    assert!(instructions(&[]).is_none());
    assert!(instructions(&[0; 7]).is_none());
    assert!(instructions(&[0; 8 * (MAX_INSTRUCTIONS + 1)]).is_none());
    let one = instructions(&[6, 0, 0, 0, 0, 0, 0xff, 0x7f]).unwrap();
    assert_eq!((one[0].code, one[0].k), (6, 0x7fff_0000));
}

#[test]
fn the_profiles_flags_become_seccomps() {
    let flags = load_flags(&profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
    ));
    assert_eq!(
        flags,
        libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
    );
    assert_eq!(load_flags(&profile(NO_GETPPID)), 0);
}

#[test]
fn a_loaded_program_refuses_what_the_profile_refuses() {
    let program = Program::for_profile(&profile(NO_GETPPID), None).unwrap();
    // SAFETY: the child only makes system calls and leaves with _exit; it takes no lock another
    // test thread may hold.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let loaded = crate::security::set_no_new_privs().and_then(|()| program.load());
            // SAFETY: getppid takes no arguments.
            let refused = unsafe { libc::syscall(libc::SYS_getppid) } == -1
                && nix::Error::last() == nix::Error::ENOSYS;
            // SAFETY: ends the forked child without running the test harness's exit handlers.
            unsafe { libc::_exit(if loaded.is_ok() && refused { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "the child loads the filter and getppid fails with ENOSYS"
            );
        }
    }
}

#[test]
fn a_container_waits_for_the_one_compiling_and_takes_its_program() {
    let cache = tempfile::tempdir().unwrap();
    let profile = profile(NO_GETPPID);
    let compiling = cache::lock(cache.path()).unwrap();
    let waiting = {
        let (dir, profile) = (cache.path().to_path_buf(), profile.clone());
        std::thread::spawn(move || Program::for_profile(&profile, Some(&dir)).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!waiting.is_finished(), "it waits while the cache is locked");
    // What the holder of the lock kept is what the waiting one loads (the allow-all program
    // here, so that a compilation of its own would show).
    let kept = compile::compile(&self::profile(r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#)).unwrap();
    cache::write(cache.path(), &cache::key(&profile), &kept);
    drop(compiling);
    assert_eq!(bytes(&waiting.join().unwrap()), kept);
}
