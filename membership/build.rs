//! Compiles the part of etcd's v3 API that membership speaks, with the
//! pure-Rust protobuf compiler (no system `protoc`), clients only.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["etcd/etcdserverpb/rpc.proto", "etcd/mvccpb/kv.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
