//! Compiles our etcd v3 `.proto` files with `protox` (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kv.proto",
        "proto/auth.proto",
        "proto/rpc.proto",
        "proto/v3lock.proto",
        "proto/v3election.proto",
        "proto/internal.proto",
        "proto/peer.proto",
        "proto/raftwire.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Raft payloads stay `Bytes`, as raft-rs's own types hold them: no copy on receipt.
        .bytes(".raftwire")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
