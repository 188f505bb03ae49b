//! Compiles `proto/` with protox (pure Rust, no system `protoc`), writes the
//! descriptor set that gRPC reflection serves, and stamps the version route.
use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/upload/v1/upload.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("upload_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;

    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    println!("cargo:rustc-env=UPLOAD_GATEWAY_COMMIT={}", git(&["rev-parse", "HEAD"]));
    println!("cargo:rustc-env=UPLOAD_GATEWAY_DATE={}", git(&["log", "-1", "--format=%cI"]));
    println!("cargo:rerun-if-changed=.git/HEAD");
    Ok(())
}
