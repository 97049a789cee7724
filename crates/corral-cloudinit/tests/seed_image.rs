//! The CIDATA image checked by tools that are not corral's: blkid, fsck.fat, mtools, and
//! cloud-localds (cloud-image-utils) as the reference writer of the same seed.

use std::path::Path;

use corral_cloudinit::{CloudInit, Identity, Interface, Seed};
use corral_testkit::require_program;
use corral_testkit::vfat::{files_in, run_ok};

fn seed() -> Seed {
    let table: CloudInit = toml::from_str(
        "user_data = \"#cloud-config\\nruncmd:\\n- [touch, /run/marker]\\n\"\n\
         vendor_data = \"#cloud-config\\n{}\\n\"\n[meta_data]\nregion = \"lab\"\n",
    )
    .unwrap();
    let nic = Interface {
        mac: "52:54:00:12:34:56".into(),
        address: Some(("10.0.3.10".parse().unwrap(), 24)),
        gateway: Some("10.0.3.1".parse().unwrap()),
        dns: vec!["10.0.3.1".parse().unwrap()],
    };
    let identity = Identity {
        uuid: "f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b".into(),
        hostname: "web".into(),
    };
    Seed::build(&table, Path::new("/"), &identity, &[nic]).unwrap()
}

#[test]
fn the_seed_image_is_a_clean_cidata_vfat_with_exactly_the_seed_files() {
    require_program!("blkid");
    require_program!("fsck.fat");
    require_program!("mdir");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("cidata.img");
    let seed = seed();
    corral_cloudinit::vfat::write_image(&seed, &image).unwrap();

    let probe = run_ok(
        "blkid",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            image.as_os_str(),
        ],
    );
    assert!(probe.lines().any(|l| l == "LABEL=CIDATA"), "{probe}");
    assert!(probe.lines().any(|l| l == "TYPE=vfat"), "{probe}");
    run_ok("fsck.fat", &["-n".as_ref(), image.as_os_str()]);

    let mut expected: Vec<(String, Vec<u8>)> = seed
        .files()
        .into_iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect();
    expected.sort();
    assert_eq!(files_in(&image), expected);
}

#[test]
fn the_files_are_byte_equal_to_what_cloud_localds_writes() {
    require_program!("cloud-localds");
    require_program!("mkfs.vfat");
    require_program!("mdir");
    let dir = tempfile::tempdir().unwrap();
    let seed = seed();
    for (name, bytes) in seed.files() {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let reference = dir.path().join("reference.img");
    let arg = |name: &str| dir.path().join(name).into_os_string();
    run_ok(
        "cloud-localds",
        &[
            "--filesystem=vfat".as_ref(),
            "--network-config".as_ref(),
            &arg("network-config"),
            "--vendor-data".as_ref(),
            &arg("vendor-data"),
            reference.as_os_str(),
            &arg("user-data"),
            &arg("meta-data"),
        ],
    );
    let ours = dir.path().join("cidata.img");
    corral_cloudinit::vfat::write_image(&seed, &ours).unwrap();
    let theirs = files_in(&reference);
    assert_eq!(theirs.len(), 4, "{theirs:?}");
    assert_eq!(files_in(&ours), theirs);
}

#[test]
fn an_iso_seed_replaces_the_old_image_whole_and_blkid_sees_iso9660_cidata() {
    require_program!("genisoimage");
    require_program!("blkid");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("cidata.img");
    std::fs::write(&image, b"the previous image").unwrap();
    corral_cloudinit::iso::write_image(&seed(), &image).unwrap();
    let probe = run_ok(
        "blkid",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            image.as_os_str(),
        ],
    );
    assert!(probe.lines().any(|l| l == "LABEL=cidata"), "{probe}");
    assert!(probe.lines().any(|l| l == "TYPE=iso9660"), "{probe}");
    // Nothing of the staging is left beside the image.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["cidata.img"]);
}
