//! corral-image's OCI import and export against umoci and podman, and malformed images: each of
//! those gives one clear error and leaves nothing beside the caller's rootfs.

mod common;

use std::path::Path;

use common::{assert_same_tree, make_tree, scratch, sh};
use corral_image::archive::Limits;
use corral_image::oci::{self, OciError};
use corral_image::progress::NoProgress;
use corral_testkit::{require_program, require_root};

/// A umoci layout `DIR/layout` with image `t`: a base layer from the test tree, a layer
/// removing a file and a directory (whiteouts), a layer making `usr/lib` opaque, and a config.
fn umoci_image(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("source");
    make_tree(&source);
    let d = dir.display();
    sh(&format!(
        r#"cd '{d}'
        umoci init --layout layout
        umoci new --image layout:t
        umoci unpack --image layout:t bundle >/dev/null
        cp -a source/. bundle/rootfs/
        umoci repack --image layout:t bundle
        rm -rf bundle && umoci unpack --image layout:t bundle >/dev/null
        rm bundle/rootfs/etc/app/owned && rm -r bundle/rootfs/var/empty
        umoci repack --image layout:t bundle
        mkdir -p opaque && printf 'new\n' > opaque/only && touch -d @1600000000 opaque/only opaque
        umoci insert --image layout:t --opaque opaque /usr/lib
        umoci config --image layout:t --config.entrypoint /bin/tool --config.cmd arg \
            --config.env A=1 --config.workingdir /etc --config.user 1000:1001
        rm -rf bundle"#
    ));
    dir.join("layout")
}

#[test]
fn a_umoci_image_imports_as_umoci_unpacks_it() {
    require_root!();
    require_program!("umoci");
    let dir = scratch("oci-umoci");
    let layout = umoci_image(dir.path());
    let layers = String::from_utf8(sh(&format!(
        "cd '{}' && for b in blobs/sha256/*; do tar tzf $b 2>/dev/null || true; done",
        layout.display()
    )))
    .unwrap();
    assert!(layers.contains(".wh.owned"), "{layers}");
    assert!(layers.contains(".wh..wh..opq"), "{layers}");

    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let image = oci::import(&layout, Some("t"), &ours, &Limits::default(), &NoProgress).unwrap();
    sh(&format!(
        "cd '{}' && umoci unpack --image layout:t reference >/dev/null",
        dir.path().display()
    ));
    assert_same_tree(&dir.path().join("reference/rootfs"), &ours, false);
    assert!(!ours.join("etc/app/owned").exists());
    assert!(!ours.join("usr/lib/blob").exists());
    assert!(ours.join("usr/lib/only").exists());

    let meta = &image.metadata;
    assert_eq!(meta.architecture, "amd64");
    assert_eq!(meta.os.as_deref(), Some("linux"));
    assert_eq!(meta.container.entrypoint, ["/bin/tool"]);
    assert_eq!(meta.container.cmd, ["arg"]);
    assert!(
        meta.container.env.contains(&"A=1".to_string()),
        "{:?}",
        meta.container.env
    );
    assert_eq!(meta.container.working_dir.as_deref(), Some("/etc"));
    assert_eq!(meta.container.user.as_deref(), Some("1000:1001"));
    assert!(image.manifest_digest.starts_with("sha256:"));
}

#[test]
fn a_podman_oci_archive_imports() {
    require_root!();
    require_program!("podman");
    let dir = scratch("oci-podman");
    let source = dir.path().join("source");
    make_tree(&source);
    let d = dir.path().display();
    sh(&format!(
        r#"cd '{d}'
        tar --xattrs --xattrs-include='*' --numeric-owner -C source -cf rootfs.tar .
        podman='podman --root {d}/storage --runroot {d}/run --storage-driver vfs'
        $podman import --change 'CMD ["/bin/tool"]' rootfs.tar corral-test-image >/dev/null
        $podman save --format oci-archive -o image.tar corral-test-image
        $podman rmi -a -f >/dev/null 2>&1 || true
        rm -rf storage run"#
    ));
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let image = oci::import(
        &dir.path().join("image.tar"),
        None,
        &ours,
        &Limits::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(image.metadata.container.command(), ["/bin/tool"]);
    // Beside rootfs: only what the test made (the archive's staging directory is gone).
    let mut beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    beside.sort();
    assert_eq!(beside, ["image.tar", "ours", "rootfs.tar", "source"]);
    let reference = dir.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -xpf '{d}/rootfs.tar' -C '{}'",
        reference.display()
    ));
    // podman's import sets the root directory's own metadata; compare below it.
    for top in ["bin", "etc", "usr", "var", "tmp"] {
        assert_same_tree(&reference.join(top), &ours.join(top), false);
    }
}

#[test]
fn an_export_imports_back_to_the_same_tree_is_deterministic_and_umoci_reads_it() {
    require_root!();
    require_program!("umoci");
    let dir = scratch("oci-export");
    let source = dir.path().join("source");
    make_tree(&source);
    let metadata = corral_image::metadata::ImageMetadata {
        image_type: corral_image::metadata::ImageType::Container,
        architecture: "amd64".into(),
        os: Some("linux".into()),
        release: None,
        description: None,
        created: Some("2024-01-01T00:00:00Z".into()),
        container: corral_image::metadata::ContainerDefaults {
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["x".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: Some("/etc".into()),
            user: Some("1000".into()),
            init: false,
        },
        vm: Default::default(),
    };
    for archive in [false, true] {
        let first = dir.path().join(format!("first-{archive}"));
        let second = dir.path().join(format!("second-{archive}"));
        oci::export(&source, &metadata, &first, archive, Some("exported")).unwrap();
        oci::export(&source, &metadata, &second, archive, Some("exported")).unwrap();
        sh(&format!(
            "diff -r '{}' '{}'",
            first.display(),
            second.display()
        ));
        let back = dir.path().join(format!("back-{archive}"));
        std::fs::create_dir(&back).unwrap();
        let image = oci::import(
            &first,
            Some("exported"),
            &back,
            &Limits::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(image.metadata, metadata);
        assert_same_tree(&source, &back, false);
    }
    sh(&format!(
        "cd '{}' && umoci unpack --image first-false:exported umoci-bundle >/dev/null",
        dir.path().display()
    ));
    assert_same_tree(&source, &dir.path().join("umoci-bundle/rootfs"), false);
}

/// Imports `layout` into `DIR/rootfs` expecting an error; nothing but `rootfs` may be left in
/// DIR.
fn refused(layout: &Path) -> OciError {
    let dir = scratch("oci-malformed");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let err = oci::import(layout, Some("t"), &rootfs, &Limits::default(), &NoProgress)
        .expect_err("the image was accepted");
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["rootfs"], "{err}");
    err
}

/// The blob files of the layout's manifest: (manifest, config, layers).
fn blobs(
    layout: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<std::path::PathBuf>,
) {
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = read(&layout.join("index.json"));
    let manifest_path = blob(&index["manifests"][0]["digest"]);
    let manifest = read(&manifest_path);
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect();
    (manifest_path, blob(&manifest["config"]["digest"]), layers)
}

#[test]
fn malformed_images_are_refused_with_one_clear_error() {
    require_root!();
    require_program!("umoci");
    let dir = scratch("oci-bad");
    let layout = umoci_image(dir.path());
    let copy = |name: &str| {
        let path = dir.path().join(name);
        sh(&format!(
            "cp -a '{}' '{}'",
            layout.display(),
            path.display()
        ));
        path
    };

    // A layer whose bytes are not its digest's (same size).
    let bad_digest = copy("bad-digest");
    let (_, _, layers) = blobs(&bad_digest);
    let mut bytes = std::fs::read(&layers[1]).unwrap();
    let last = bytes.len() - 9; // inside the gzip trailer's CRC: the tar still reads
    bytes[last] ^= 0xff;
    std::fs::write(&layers[1], &bytes).unwrap();
    let err = refused(&bad_digest);
    assert!(
        matches!(&err, OciError::BadDigest { .. } | OciError::Layer { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(layers[1].file_name().unwrap().to_str().unwrap()),
        "{err}"
    );

    // A truncated layer.
    let truncated = copy("truncated");
    let (_, _, layers) = blobs(&truncated);
    let bytes = std::fs::read(&layers[0]).unwrap();
    std::fs::write(&layers[0], &bytes[..bytes.len() / 2]).unwrap();
    let err = refused(&truncated);
    assert!(matches!(err, OciError::BadSize { .. }), "{err}");

    // A manifest naming a blob that is not there.
    let missing = copy("missing");
    let (_, config, _) = blobs(&missing);
    std::fs::remove_file(&config).unwrap();
    let err = refused(&missing);
    assert!(matches!(err, OciError::MissingBlob { .. }), "{err}");

    // An oversized JSON blob: the manifest descriptor claims 64 MiB.
    let oversized = copy("oversized");
    let index_path = oversized.join("index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();
    let index = index.replacen("\"size\":", "\"size\":67108864,\"was\":", 1);
    std::fs::write(&index_path, index).unwrap();
    let err = refused(&oversized);
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
}
