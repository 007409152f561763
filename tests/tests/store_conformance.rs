//! One conformance suite for the blob-store port, run against the local-folder adapter and against the Azure
//! adapter talking to a real Azurite.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use bytes::Bytes;
use clouddp_e2e::azurite::Azurite;
use clouddp_platform::store::{
    AzureCredential, AzureStore, AzureStoreConfig, BlobStore, LocalFolderStore, StoreError,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|index| (index as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Runs every check against a fresh store; `reopen` gives a new handle on the same store (a "restart").
async fn conformance(store: &dyn BlobStore, reopen: &dyn Fn() -> Box<dyn BlobStore>) {
    store.ensure_container().await.unwrap();
    store
        .ensure_container()
        .await
        .expect("ensure_container is idempotent");
    assert!(
        store.list("").await.unwrap().is_empty(),
        "a new store is empty"
    );

    // Small objects.
    store
        .put(
            "usage/2026/hour-1.json",
            Bytes::from_static(b"{\"bytes\":5}"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.head("usage/2026/hour-1.json").await.unwrap(),
        Some(11)
    );
    assert_eq!(
        &store
            .get_range("usage/2026/hour-1.json", 2..7)
            .await
            .unwrap()[..],
        b"bytes"
    );
    store
        .put("usage/2026/hour-1.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        store.head("usage/2026/hour-1.json").await.unwrap(),
        Some(2),
        "put replaces"
    );

    // A multipart upload, parts staged out of order, invisible until complete.
    let part_len = 300_000;
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|index| pattern(part_len - index * 1000, index as u8))
        .collect();
    let whole: Vec<u8> = parts.concat();
    let offsets: Vec<u64> = parts
        .iter()
        .scan(0_u64, |offset, part| {
            let start = *offset;
            *offset += part.len() as u64;
            Some(start)
        })
        .collect();
    let mut tokens = vec![String::new(); 3];
    for index in [2_usize, 0] {
        tokens[index] = store
            .put_part(
                "content/c1/v1/sealed",
                index as u32,
                offsets[index],
                Bytes::from(parts[index].clone()),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.head("content/c1/v1/sealed").await.unwrap(),
        None,
        "staged parts are not an object"
    );
    assert!(
        store.list("content/").await.unwrap().is_empty(),
        "staged parts are not listed"
    );

    // A restart: a new handle continues with the tokens kept from before.
    let reopened = reopen();
    tokens[1] = reopened
        .put_part(
            "content/c1/v1/sealed",
            1,
            offsets[1],
            Bytes::from(parts[1].clone()),
        )
        .await
        .unwrap();
    reopened
        .complete("content/c1/v1/sealed", &tokens, whole.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        store.head("content/c1/v1/sealed").await.unwrap(),
        Some(whole.len() as u64)
    );
    let all = store
        .get_range("content/c1/v1/sealed", 0..whole.len() as u64)
        .await
        .unwrap();
    assert!(all[..] == whole[..], "the object is the parts in order");
    let across = store
        .get_range("content/c1/v1/sealed", 299_000..301_500)
        .await
        .unwrap();
    assert_eq!(
        &across[..],
        &whole[299_000..301_500],
        "a range across a part boundary"
    );

    let listed = store.list("content/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "content/c1/v1/sealed");
    assert_eq!(listed[0].size, whole.len() as u64);
    assert_eq!(store.list("").await.unwrap().len(), 2);

    // Errors.
    assert!(matches!(
        store.get_range("content/missing", 0..1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.put("../escape", Bytes::new()).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.head("/absolute").await,
        Err(StoreError::Invalid(_))
    ));

    // Deletes are idempotent.
    store.delete("content/c1/v1/sealed").await.unwrap();
    store.delete("content/c1/v1/sealed").await.unwrap();
    assert_eq!(store.head("content/c1/v1/sealed").await.unwrap(), None);

    store.delete_container().await.unwrap();
    store
        .delete_container()
        .await
        .expect("deleting a deleted container succeeds");
}

#[tokio::test]
async fn local_folder_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dp-folder");
    let store = LocalFolderStore::new(&root);
    let reopen_root = root.clone();
    conformance(&store, &move || {
        Box::new(LocalFolderStore::new(&reopen_root))
    })
    .await;
    assert!(!root.exists(), "delete_container removes the folder");
}

fn azure(azurite: &Azurite, container: &str) -> AzureStore {
    AzureStore::new(AzureStoreConfig {
        account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
        container: container.to_owned(),
        endpoint: azurite.blob_endpoint(),
        credential: AzureCredential::AccountKey(clouddp_e2e::azurite::ACCOUNT_KEY.to_owned()),
    })
    .unwrap()
}

#[tokio::test]
async fn azure_store_conforms_against_azurite() {
    let azurite = Azurite::start().await.unwrap();
    let store = azure(&azurite, "conformance");
    let endpoint = azurite.blob_endpoint();
    conformance(&store, &move || {
        Box::new(
            AzureStore::new(AzureStoreConfig {
                account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
                container: "conformance".to_owned(),
                endpoint: endpoint.clone(),
                credential: AzureCredential::Emulator,
            })
            .unwrap(),
        )
    })
    .await;
    assert!(
        store.list("").await.is_err(),
        "the deleted container cannot be listed any more"
    );
}

#[tokio::test]
async fn azure_store_refuses_a_wrong_key_clearly() {
    let azurite = Azurite::start().await.unwrap();
    let store = AzureStore::new(AzureStoreConfig {
        account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
        container: "denied".to_owned(),
        endpoint: azurite.blob_endpoint(),
        credential: AzureCredential::AccountKey("d3Jvbmcga2V5".to_owned()),
    })
    .unwrap();
    let error = store.ensure_container().await.unwrap_err();
    assert!(matches!(error, StoreError::Denied(_)), "{error:?}");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn azure_store_works_with_a_container_sas_and_a_read_only_one_refuses_writes() {
    use clouddp_platform::store::container_sas;
    let azurite = Azurite::start().await.unwrap();
    let owner = azure(&azurite, "sas-scoped");
    owner.ensure_container().await.unwrap();
    let expiry = std::time::SystemTime::now() + std::time::Duration::from_secs(600);
    let with_sas = |permissions: &str| {
        let token = container_sas(
            clouddp_e2e::azurite::ACCOUNT,
            "sas-scoped",
            clouddp_e2e::azurite::ACCOUNT_KEY,
            permissions,
            expiry,
        )
        .unwrap();
        AzureStore::new(AzureStoreConfig {
            account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
            container: "sas-scoped".to_owned(),
            endpoint: azurite.blob_endpoint(),
            credential: AzureCredential::Sas(token),
        })
        .unwrap()
    };
    // Read, add, create, write, delete, list: the store works through the SAS, staged parts included.
    let writer = with_sas("racwdl");
    writer
        .put(
            "usage/a.jsonl",
            bytes::Bytes::from_static(b"{\"bytes\":1}\n"),
        )
        .await
        .unwrap();
    let data = pattern(3 << 20, 7);
    let first = writer
        .put_part(
            "content/x.sealed",
            0,
            0,
            bytes::Bytes::copy_from_slice(&data[..2 << 20]),
        )
        .await
        .unwrap();
    let second = writer
        .put_part(
            "content/x.sealed",
            1,
            2 << 20,
            bytes::Bytes::copy_from_slice(&data[2 << 20..]),
        )
        .await
        .unwrap();
    writer
        .complete("content/x.sealed", &[first, second], data.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        writer
            .get_range("content/x.sealed", 100..200)
            .await
            .unwrap()
            .as_ref(),
        &data[100..200]
    );
    // Read and list only: reads work, a write is refused as a permission problem (not retried).
    let reader = with_sas("rl");
    let listed: Vec<String> = reader
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.path)
        .collect();
    assert_eq!(listed, ["content/x.sealed", "usage/a.jsonl"]);
    assert_eq!(
        reader
            .get_range("usage/a.jsonl", 0..4)
            .await
            .unwrap()
            .as_ref(),
        b"{\"by"
    );
    let refused = reader
        .put("usage/b.jsonl", bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, clouddp_platform::store::StoreError::Denied(_)),
        "{refused:?}"
    );
    writer.delete("usage/a.jsonl").await.unwrap();
    owner.delete_container().await.unwrap();
}

#[tokio::test]
async fn azure_store_says_when_staged_parts_are_gone_and_a_refused_connection_is_transient() {
    let mut azurite = Azurite::start().await.unwrap();
    let store = azure(&azurite, "lost-parts");
    store.ensure_container().await.unwrap();
    let staged = store
        .put_part("content/lost/sealed", 0, 0, Bytes::from(pattern(1000, 1)))
        .await
        .unwrap();
    // A part the store no longer has (as after a week, or an emulator that lost it): the commit says so.
    let lost = BASE64_STANDARD.encode(b"a block the store never kept");
    let error = store
        .complete("content/lost/sealed", &[staged.clone(), lost], 2000)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::PartsLost(_)), "{error:?}");
    // Staged again, the commit goes through.
    let again = store
        .put_part(
            "content/lost/sealed",
            1,
            1000,
            Bytes::from(pattern(1000, 2)),
        )
        .await
        .unwrap();
    store
        .complete("content/lost/sealed", &[staged, again], 2000)
        .await
        .unwrap();

    // A store that refuses connections is unavailable (retried), whatever numbers its message holds.
    azurite.stop();
    let error = store
        .put_part(
            "content/cv-401-403/sealed",
            0,
            0,
            Bytes::from(pattern(10, 3)),
        )
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}
