//! Compiles `clouddp/v1/*.proto` into OUT_DIR with the vendored protoc, and writes the descriptor set that the
//! servers register for reflection.

use std::path::PathBuf;

const PROTO_DIR: &str = "clouddp/v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut proto_files: Vec<PathBuf> = std::fs::read_dir(PROTO_DIR)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    proto_files.sort();
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for proto_file in &proto_files {
        println!("cargo:rerun-if-changed={}", proto_file.display());
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut prost_config = tonic_prost_build::Config::new();
    prost_config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    prost_config.protoc_arg("--experimental_allow_proto3_optional");
    // Every message knows its full name, by which the codec finds the limits of a request.
    prost_config.enable_type_names();
    tonic_prost_build::configure()
        .codec_path("crate::bounded::BoundedCodec")
        .file_descriptor_set_path(out_dir.join("clouddp_descriptor.bin"))
        .compile_with_config(prost_config, &proto_files, &[PathBuf::from(".")])?;
    Ok(())
}
