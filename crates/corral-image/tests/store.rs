//! The image store: atomic, deduplicated imports, aliases, guarded deletion, litter sweeping.

use corral_image::metadata::{ImageMetadata, ImageType};
use corral_image::store::{ImageStore, NewImage, StoreError, ROOTFS};

fn metadata() -> ImageMetadata {
    ImageMetadata {
        image_type: ImageType::Container,
        architecture: "amd64".into(),
        os: Some("busybox".into()),
        release: None,
        description: None,
        created: None,
        container: Default::default(),
        vm: Default::default(),
    }
}

fn fingerprint(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn import(store: &ImageStore, n: u8, content: &str) -> (corral_image::store::Image, bool) {
    let staging = store.staging().unwrap();
    let rootfs = staging.dir().join(ROOTFS);
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::write(rootfs.join("file"), content).unwrap();
    store
        .commit(
            staging,
            NewImage {
                fingerprint: fingerprint(n),
                metadata: metadata(),
                source: "test".into(),
            },
        )
        .unwrap()
}

fn hidden_entries(store: &ImageStore) -> Vec<String> {
    std::fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn the_same_content_is_stored_once_and_staging_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let (first, new) = import(&store, 1, "one");
    assert!(new);
    assert_eq!(first.record.size, 3);
    let (again, new) = import(&store, 1, "one");
    assert!(
        !new,
        "a second import of the same fingerprint is not stored again"
    );
    assert_eq!(again.fingerprint(), first.fingerprint());
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(
        hidden_entries(&store).is_empty(),
        "{:?}",
        hidden_entries(&store)
    );
    let stored = std::fs::read_to_string(first.rootfs().unwrap().join("file")).unwrap();
    assert_eq!(stored, "one");
    assert!(matches!(first.disk(), Err(StoreError::MissingContent(_))));
}

#[test]
fn a_dropped_import_never_appears() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let staging = store.staging().unwrap();
    std::fs::create_dir(staging.dir().join(ROOTFS)).unwrap();
    drop(staging);
    assert!(store.list().unwrap().is_empty());
    assert!(hidden_entries(&store).is_empty());
}

#[test]
fn the_staging_of_a_dead_process_is_swept_and_a_live_ones_kept() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let litter = store.dir().join(format!(".importing-{dead}-0"));
    std::fs::create_dir_all(litter.join("rootfs/etc")).unwrap();
    let aside = store
        .dir()
        .join(format!(".deleting-{}-{dead}", fingerprint(7)));
    std::fs::create_dir_all(&aside).unwrap();
    let live = store.staging().unwrap();
    ImageStore::open(root.path()).unwrap();
    assert!(!litter.exists() && !aside.exists());
    assert!(live.dir().exists());
}

#[test]
fn a_deletion_killed_after_its_rename_is_finished_with_its_aliases() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let (image, _) = import(&store, 1, "gone");
    import(&store, 2, "kept");
    store.set_alias("gone", &fingerprint(1), false).unwrap();
    store
        .set_alias("gone/amd64", &fingerprint(1), false)
        .unwrap();
    store.set_alias("kept", &fingerprint(2), false).unwrap();
    // What `delete` leaves when it is killed between its rename and the alias rewrite.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let aside = store
        .dir()
        .join(format!(".deleting-{}-{dead}", fingerprint(1)));
    std::fs::rename(image.dir(), &aside).unwrap();

    let store = ImageStore::open(root.path()).unwrap();
    assert!(!aside.exists(), "the deletion's tree is swept");
    assert_eq!(
        store.aliases().unwrap().into_iter().collect::<Vec<_>>(),
        [("kept".to_string(), fingerprint(2))],
        "the deleted image's aliases go with it"
    );
    // The name is free for another image.
    store.set_alias("gone", &fingerprint(2), false).unwrap();
}

#[test]
fn references_resolve_by_alias_fingerprint_and_unique_prefix() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    import(&store, 0xab, "a");
    import(&store, 0xac, "b");
    store.set_alias("debian-12/amd64", "abab", false).unwrap();
    let image = store.resolve("debian-12/amd64").unwrap();
    assert_eq!(image.fingerprint(), fingerprint(0xab));
    assert_eq!(image.aliases, ["debian-12/amd64"]);
    assert_eq!(
        store.resolve(&fingerprint(0xac)).unwrap().fingerprint(),
        fingerprint(0xac)
    );
    assert!(matches!(
        store.resolve("a"),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(
        store.resolve("nope"),
        Err(StoreError::NotFound(_))
    ));
    let taken = store
        .set_alias("debian-12/amd64", "acac", false)
        .unwrap_err();
    assert!(
        taken
            .to_string()
            .contains("already names image abababababab"),
        "{taken}"
    );
    store.set_alias("debian-12/amd64", "acac", true).unwrap();
    assert_eq!(
        store.resolve("debian-12/amd64").unwrap().fingerprint(),
        fingerprint(0xac)
    );
    for bad in ["", "-x", "a b", "../x", &fingerprint(1)] {
        assert!(
            matches!(
                store.set_alias(bad, "acac", false),
                Err(StoreError::InvalidAlias(_))
            ),
            "{bad:?}"
        );
    }
    store.remove_alias("debian-12/amd64").unwrap();
    assert!(matches!(
        store.remove_alias("debian-12/amd64"),
        Err(StoreError::NoAlias(_))
    ));
}

#[test]
fn an_image_in_use_is_kept_and_a_deleted_one_loses_its_aliases() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let (image, _) = import(&store, 3, "x");
    store.set_alias("base", image.fingerprint(), false).unwrap();
    let image = store.resolve("base").unwrap();
    let refused = store.delete(&image, &["web".into()]).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "image base (030303030303) is used by web: delete it first, or recreate it with --full \
         (an independent copy)"
    );
    assert!(image.dir().exists());
    store.delete(&image, &[]).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(store.aliases().unwrap().is_empty());
    assert!(hidden_entries(&store)
        .iter()
        .all(|n| n == ".." || !n.starts_with(".deleting")));
}

#[test]
fn racing_imports_of_one_content_store_it_once() {
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || import(&store, 9, "same").1)
        })
        .collect();
    let new: usize = threads
        .into_iter()
        .map(|t| t.join().unwrap() as usize)
        .sum();
    assert_eq!(new, 1, "exactly one import stored it");
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(
        hidden_entries(&store).is_empty(),
        "{:?}",
        hidden_entries(&store)
    );
}
