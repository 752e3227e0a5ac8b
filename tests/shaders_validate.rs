//! naga parses and validates every WGSL file in shaders/ (as the GPU backend
//! compiles it: kernels that draw random numbers get philox.wgsl prepended),
//! and every file is used by a registered kernel.

use scoredd::backend::gpu::kernels::{all_kernels, PHILOX_LIBRARY};

fn validate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
}

#[test]
fn every_kernel_validates() {
    for k in all_kernels() {
        validate(k.entry, &k.wgsl());
    }
}

#[test]
fn the_philox_library_validates_alone() {
    validate(
        "philox.wgsl",
        &format!("{PHILOX_LIBRARY}\n@compute @workgroup_size(1) fn main() {{}}"),
    );
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let registered: Vec<String> = all_kernels().iter().map(|k| k.wgsl()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == "philox.wgsl" {
            continue;
        }
        validate(
            &path.display().to_string(),
            &format!("{PHILOX_LIBRARY}\n{text}"),
        );
        assert!(
            registered.iter().any(|r| r.contains(&text)),
            "{} is not used by any kernel in backend::gpu::kernels",
            path.display()
        );
    }
}
