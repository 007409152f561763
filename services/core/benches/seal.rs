//! Throughput of the sealed-content primitives on this machine: SHA-256 of plaintext chunks and AES-256-GCM
//! sealing of 1 MiB chunks in place. `cargo bench -p clouddp-core` prints GB/s.
#![forbid(unsafe_code)]

use std::time::Instant;

use clouddp_core::content::sha256;
use clouddp_core::seal::{CHUNK_SIZE, ChunkCipher, ContentBinding, DataKey, SealedLayout};

fn main() {
    let chunks: u64 = 512;
    let layout = SealedLayout::new(chunks * u64::from(CHUNK_SIZE), CHUNK_SIZE).expect("layout");
    let key = DataKey::generate().expect("key");
    let cipher = ChunkCipher::new(
        &key,
        ContentBinding {
            content_id: "cnt-bench".to_owned(),
            version: 1,
        },
        layout,
    )
    .expect("cipher");
    let mut buffer = vec![0x5a_u8; CHUNK_SIZE as usize];
    let bytes = (chunks * u64::from(CHUNK_SIZE)) as f64;

    let started = Instant::now();
    let mut digest_sum = 0_u64;
    for _ in 0..chunks {
        digest_sum += u64::from(sha256(&buffer)[0]);
    }
    let sha_rate = bytes / started.elapsed().as_secs_f64() / 1e9;

    let started = Instant::now();
    for index in 0..chunks {
        let tag = cipher
            .seal_chunk_in_place(index, &mut buffer)
            .expect("seal");
        digest_sum += u64::from(tag[0]);
    }
    let seal_rate = bytes / started.elapsed().as_secs_f64() / 1e9;
    println!(
        "sha256 {sha_rate:.2} GB/s, aes-256-gcm seal {seal_rate:.2} GB/s per core ({digest_sum})"
    );
}
