//! The OVF envelope parser against the shapes VirtualBox (OVF 1.0 and 2.0) and VMware's ovftool
//! write, and against hostile envelopes (XXE, billion laughs, oversized, dangling references).

use corral_image::ovf::envelope::{self, ControllerKind, EnvelopeError, OvfVersion};
use corral_image::ovf::OvfError;

/// A fixture envelope with its placeholders filled.
fn fixture(name: &str, values: &[(&str, &str)]) -> String {
    let path = format!("{}/tests/data/ovf/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(path).unwrap();
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    text
}

#[test]
fn a_virtualbox_1_0_envelope_gives_cpus_memory_disks_by_controller_and_the_vbox_mac() {
    let text = fixture(
        "virtualbox-1.0.ovf",
        &[
            ("SIZE1", "100"),
            ("SIZE2", "200"),
            ("CAPACITY1", "4194304"),
            ("CAPACITY2", "8388608"),
        ],
    );
    let envelope = envelope::parse(text.as_bytes()).unwrap();
    assert_eq!(envelope.version, OvfVersion::V1);
    assert_eq!(envelope.networks, vec!["NAT".to_string()]);
    assert_eq!(envelope.files.len(), 2);
    assert_eq!(envelope.files[1].size, Some(200));
    let [system] = envelope.systems.as_slice() else {
        panic!("{:?}", envelope.systems)
    };
    assert_eq!(system.id, "vbox-guest");
    assert_eq!(system.cpus, Some(2));
    assert_eq!(system.memory, Some(96 << 20));
    // The IDE controller comes first, so its disk does, though the SATA item is written first.
    let disks: Vec<(&str, u64, ControllerKind)> = system
        .disks
        .iter()
        .map(|d| {
            (
                d.disk.id.as_str(),
                d.disk.capacity,
                d.controller.as_ref().unwrap().kind,
            )
        })
        .collect();
    assert_eq!(
        disks,
        vec![
            ("vmdisk1", 4 << 20, ControllerKind::Ide),
            ("vmdisk2", 8 << 20, ControllerKind::Other)
        ]
    );
    assert_eq!(system.nics.len(), 1);
    assert_eq!(system.nics[0].network.as_deref(), Some("NAT"));
    assert_eq!(system.nics[0].model.as_deref(), Some("E1000"));
    assert_eq!(system.nics[0].mac, None);
    assert_eq!(system.vendor_macs, vec!["08:00:27:a1:b2:c3".to_string()]);
    let others: Vec<u32> = system.others.iter().map(|o| o.resource_type).collect();
    assert_eq!(others, vec![35, 15]);
}

#[test]
fn a_virtualbox_2_0_envelope_reads_storage_and_ethernet_port_items() {
    let text = fixture(
        "virtualbox-2.0.ovf",
        &[("SIZE1", "100"), ("CAPACITY1", "4194304")],
    );
    let envelope = envelope::parse(text.as_bytes()).unwrap();
    assert_eq!(envelope.version, OvfVersion::V2);
    let system = &envelope.systems[0];
    assert_eq!(system.cpus, Some(1));
    assert_eq!(system.memory, Some(64 << 20));
    assert_eq!(system.disks.len(), 1);
    assert_eq!(system.disks[0].disk.file_ref.as_deref(), Some("file1"));
    assert_eq!(system.nics.len(), 1);
    assert_eq!(system.nics[0].mac.as_deref(), Some("08:00:27:12:34:56"));
}

#[test]
fn an_ovftool_envelope_reads_a_default_namespace_scsi_and_gigabyte_units() {
    let text = fixture("ovftool-1.0.ovf", &[("SIZE1", "100"), ("CAPACITY1", "2")]);
    let envelope = envelope::parse(text.as_bytes()).unwrap();
    let system = &envelope.systems[0];
    assert_eq!(system.name.as_deref(), Some("vmware-guest"));
    assert_eq!(system.cpus, Some(4));
    assert_eq!(system.memory, Some(1 << 30));
    assert_eq!(system.disks[0].disk.capacity, 2 << 30);
    assert_eq!(
        system.disks[0].controller.as_ref().unwrap().kind,
        ControllerKind::Scsi
    );
    assert_eq!(system.nics[0].mac.as_deref(), Some("00:50:56:aa:bb:cc"));
    assert_eq!(system.nics[0].network.as_deref(), Some("VM Network"));
    assert_eq!(system.others[0].resource_type, 14);
}

#[test]
fn external_entities_and_billion_laughs_are_refused_before_anything_expands() {
    let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE Envelope [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References>&secret;</References></Envelope>"#;
    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for level in 1..10 {
        let previous = if level == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", level - 1)
        };
        laughs.push_str(&format!(
            "<!ENTITY lol{level} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    laughs.push_str(
        "]>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">&lol9;</Envelope>",
    );
    for text in [xxe, laughs.as_str()] {
        let err = envelope::parse(text.as_bytes()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Xml(_)), "{err:?}");
        assert!(err.to_string().contains("DTD"), "{err}");
    }
}

#[test]
fn malformed_envelopes_name_what_is_wrong() {
    let ok = fixture("ovftool-1.0.ovf", &[("SIZE1", "100"), ("CAPACITY1", "2")]);
    let cases: Vec<(String, &str)> = vec![
        ("<a/>".into(), "not an OVF envelope"),
        (
            ok.replace("ovf:/disk/vmdisk1", "ovf:/disk/nosuch"),
            "\"nosuch\"",
        ),
        (
            ok.replace("ovf:fileRef=\"file1\"", "ovf:fileRef=\"file9\""),
            "file9",
        ),
        (
            ok.replace("ovf:capacity=\"2\"", "ovf:capacity=\"${size}\""),
            "capacity",
        ),
        (
            ok.replace("byte * 2^30\" ovf:diskId", "parsecs\" ovf:diskId"),
            "parsecs",
        ),
        (ok.replace("00:50:56:aa:bb:cc", "00:50:56"), "00:50:56"),
        (
            ok.replace(
                "ovf:id=\"file1\"",
                "ovf:id=\"file1\" ovf:compression=\"gzip\"",
            ),
            "compressed (gzip)",
        ),
        (
            ok.replace("<VirtualSystem ovf:id=\"vmware-guest\">", "<VirtualSystem>"),
            "ovf:id",
        ),
    ];
    for (text, expected) in cases {
        let err = envelope::parse(text.as_bytes()).unwrap_err();
        let message = error_chain(&err);
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let big = format!("{ok}<!--{}-->", " ".repeat(envelope::MAX_ENVELOPE_BYTES));
    assert!(matches!(
        envelope::parse(big.as_bytes()),
        Err(EnvelopeError::TooLarge)
    ));
    let items = "<Item><rasd:ResourceType>35</rasd:ResourceType></Item>".repeat(1100);
    let crowded = ok.replace(
        "<VirtualHardwareSection>",
        &format!("<VirtualHardwareSection>{items}"),
    );
    assert!(matches!(
        envelope::parse(crowded.as_bytes()),
        Err(EnvelopeError::TooMany { .. })
    ));
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[test]
fn a_package_that_is_neither_tar_nor_xml_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.ova");
    std::fs::write(&path, b"\x00\x01 not a package").unwrap();
    let err = corral_image::ovf::package::Package::open(&path).unwrap_err();
    assert!(matches!(err, OvfError::NotAPackage { .. }), "{err:?}");
}

/// An ovftool-shaped `.ovf` in a new directory whose disk file is `disk` (raw bytes) declared
/// `size` bytes long and 1 GiB big, and an optional manifest.
fn directory_package(disk: &[u8], size: usize, manifest: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = fixture(
        "ovftool-1.0.ovf",
        &[("SIZE1", &size.to_string()), ("CAPACITY1", "1")],
    );
    std::fs::write(dir.path().join("vm.ovf"), text).unwrap();
    std::fs::write(dir.path().join("vmware-disk1.vmdk"), disk).unwrap();
    if let Some(manifest) = manifest {
        std::fs::write(dir.path().join("vm.mf"), manifest).unwrap();
    }
    dir
}

fn sha256_line(dir: &std::path::Path, file: &str) -> String {
    let bytes = std::fs::read(dir.join(file)).unwrap();
    format!(
        "SHA256({file})= {}\n",
        corral_image::ovf::manifest::FileDigests::of(&bytes).sha256
    )
}

#[test]
fn a_directory_package_is_checked_against_its_manifest_and_sizes_and_its_disk_grown() {
    use corral_image::ovf::disks::import_disks;
    use corral_image::ovf::package::Package;
    use corral_image::progress::NoProgress;

    let disk = vec![0x5au8; 1 << 20];
    let import = |dir: &tempfile::TempDir| {
        let package = Package::open(&dir.path().join("vm.ovf"))?;
        let target = tempfile::tempdir().unwrap();
        let made = import_disks(
            &package,
            &package.envelope.systems[0],
            target.path(),
            &NoProgress,
        )?;
        Ok::<_, OvfError>((made, target))
    };

    // No manifest: imported unverified, grown to the declared 1 GiB, the file left in place.
    let dir = directory_package(&disk, disk.len(), None);
    let (made, target) = import(&dir).unwrap();
    assert!(!made.verified);
    assert_eq!(made.files, vec!["disk0.qcow2".to_string()]);
    let info = corral_disk::info(
        &target.path().join("disk0.qcow2"),
        corral_disk::OpenOptions::read_only(),
    )
    .unwrap();
    assert_eq!(info.virtual_size, 1 << 30);
    assert!(dir.path().join("vmware-disk1.vmdk").is_file());

    // A manifest covering both files: verified.
    let dir = directory_package(&disk, disk.len(), None);
    let full = sha256_line(dir.path(), "vm.ovf") + &sha256_line(dir.path(), "vmware-disk1.vmdk");
    std::fs::write(dir.path().join("vm.mf"), &full).unwrap();
    assert!(import(&dir).unwrap().0.verified);

    // One that leaves the disk out, one with a wrong digest, one listing a missing file.
    let only_envelope = sha256_line(dir.path(), "vm.ovf");
    let wrong = full.replace(&full[full.len() - 9..full.len() - 1], "00000000");
    let missing = format!("{full}SHA1(tools.iso)= {}\n", "0".repeat(40));
    for (manifest, expected) in [
        (only_envelope, "is not listed in its manifest"),
        (wrong, "does not match its manifest"),
        (missing, "lacks `tools.iso`, which its manifest names"),
    ] {
        std::fs::write(dir.path().join("vm.mf"), manifest).unwrap();
        let err = import(&dir).unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }

    // A file whose size is not the declared one.
    let dir = directory_package(&disk, disk.len() + 1, None);
    let err = import(&dir).unwrap_err();
    assert!(matches!(err, OvfError::SizeMismatch { .. }), "{err:?}");
}
