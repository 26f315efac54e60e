//! Compiles `searchtree/v1/{search,corpus}.proto` (and the OTLP trace
//! export, `opentelemetry/otlp_trace.proto`) with a pure-Rust protobuf compiler
//! (no system `protoc` needed) and keeps the encoded descriptor set for
//! server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["searchtree/v1/search.proto", "searchtree/v1/corpus.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("searchtree_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // A node's profile is asked for rarely but would sit inline in every
        // response, making each move of a response between a fan-out's
        // states copy it.
        .boxed(".searchtree.v1.SearchResponse.profile")
        .compile_fds(descriptors)?;
    // The OTLP trace export nodes send spans by (kept out of the
    // descriptor set above: it is not a service nodes serve).
    let otlp = "opentelemetry/otlp_trace.proto";
    println!("cargo:rerun-if-changed={otlp}");
    tonic_prost_build::configure().compile_fds(protox::compile([otlp], ["."])?)?;
    Ok(())
}
