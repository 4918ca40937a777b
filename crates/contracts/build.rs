//! Generates the gRPC code from `proto/` with a protoc shipped as a crate, so a build needs
//! no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let protos = ["../../proto/product.proto", "../../proto/order.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // The descriptor set lets product and order services answer gRPC reflection (grpcurl).
    let descriptor =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("shopmesh_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_with_config(config, &protos, &["../../proto"])?;
    Ok(())
}
