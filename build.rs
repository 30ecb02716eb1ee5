//! Compiles the wire contract in `proto/` with a pure-Rust protobuf compiler
//! (no system `protoc` needed) and generates the tonic/prost code, plus the
//! encoded descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "baton/v1/common.proto",
    "baton/v1/pack.proto",
    "baton/v1/enrolment.proto",
    "baton/v1/directory.proto",
    "baton/v1/exchange.proto",
    "baton/v1/federation.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=server/migrations");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("baton_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Ciphertext chunks as `Bytes`: decoded without a copy (a slice of
        // the message buffer), so an upload in flight holds one chunk, not
        // two, and a download's chunk is sent as it was read.
        .bytes(".baton.v1.UploadRequest.chunk")
        .bytes(".baton.v1.DownloadResponse.chunk")
        .bytes(".baton.v1.DownloadManyResponse.ciphertext")
        .bytes(".baton.v1.RelayMessage.chunk")
        .compile_fds(fds)?;
    Ok(())
}
