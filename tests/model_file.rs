//! The model file: save → load gives identical outputs; truncated, corrupted,
//! mismatched or foreign files are errors, never panics.

mod common;

use common::{cpu, rand_vec};
use scoredd::backend::Backend;
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{ForwardOpts, TimeEmbedding, UNetConfig};
use scoredd::sde::SdeConfig;
use scoredd::Error;

fn model() -> ScoreModel<scoredd::backend::cpu::CpuBackend> {
    ScoreModel::new(
        &cpu(),
        UNetConfig::tiny(1, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
        3,
    )
    .unwrap()
}

fn out_of(m: &ScoreModel<scoredd::backend::cpu::CpuBackend>) -> Vec<f32> {
    let c = cpu();
    let x = c.upload(&rand_vec(2 * 1024, 5), &[2, 1, 32, 32]).unwrap();
    c.read(
        &m.net
            .forward(
                &c,
                &m.params,
                m.sde.as_ref(),
                &x,
                &[0.2, 0.7],
                &ForwardOpts::default(),
            )
            .unwrap()
            .out,
    )
    .unwrap()
}

fn expect_model_error(bytes: &[u8], what: &str) {
    match ModelFile::from_bytes(bytes, "test.safetensors") {
        Err(Error::ModelFile { detail, .. }) => eprintln!("{what}: {detail}"),
        Err(e) => panic!("{what}: expected a model-file error, got {e}"),
        Ok(_) => panic!("{what}: a bad file loaded"),
    }
}

#[test]
fn save_and_load_round_trip_exactly() {
    let c = cpu();
    let mut m = model();
    m.meta.step = 1234;
    let dir = std::env::temp_dir().join(format!("scoredd-mf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    m.to_file(&c).unwrap().save(&path).unwrap();
    let back = ModelFile::load(&path).unwrap();
    assert_eq!(back.meta.step, 1234);
    assert_eq!(back.meta, m.meta);
    let m2 = ScoreModel::from_file(&c, &back).unwrap();
    assert_eq!(
        out_of(&m),
        out_of(&m2),
        "outputs must be bit-identical after a round trip"
    );
    assert!(!dir.join("m.safetensors.tmp").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_files_are_errors() {
    let c = cpu();
    let bytes = model().to_file(&c).unwrap().to_bytes().unwrap();
    expect_model_error(&[], "empty");
    expect_model_error(&bytes[..bytes.len() / 2], "truncated");
    expect_model_error(&bytes[..7], "truncated header");
    let mut garbled = bytes.clone();
    for b in garbled[8..40].iter_mut() {
        *b = b'#';
    }
    expect_model_error(&garbled, "corrupted header");
    expect_model_error(b"\x89PNG\r\n\x1a\n not a model at all", "foreign file");
    // NaN weights.
    let mut f = model().to_file(&c).unwrap();
    f.weights[3][0] = f32::NAN;
    let nan_bytes = f.to_bytes().unwrap();
    expect_model_error(&nan_bytes, "NaN weights");
}

#[test]
fn mismatched_shapes_and_metadata_are_errors() {
    let c = cpu();
    let f = model().to_file(&c).unwrap();
    // Metadata says RGB, weights are for grayscale.
    let mut other = f.clone();
    other.meta.model.channels = 3;
    let small = ScoreModel::new(
        &c,
        UNetConfig::tiny(3, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
        3,
    )
    .unwrap();
    let mut w = small.to_file(&c).unwrap();
    w.meta = f.meta.clone();
    assert!(
        w.to_bytes().is_err(),
        "weights of another config must not serialise under this config"
    );
    // A file whose metadata names another architecture than its tensors.
    let mut lying = small.to_file(&c).unwrap().to_bytes().unwrap();
    // The metadata JSON sits inside the header as a string, so its quotes are escaped.
    let needle = br#"channels\":3"#;
    let pos = lying
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    lying[pos + needle.len() - 1] = b'1';
    expect_model_error(&lying, "metadata/tensor mismatch");
    // Unknown format version.
    let mut v2 = f.clone();
    v2.meta.format = 99;
    expect_model_error(&v2.to_bytes().unwrap(), "format version");
    // Invalid SDE parameters.
    let mut sde = f;
    sde.meta.sde = SdeConfig::Ve {
        sigma_min: 5.0,
        sigma_max: 1.0,
        n: 10,
    };
    expect_model_error(&sde.to_bytes().unwrap(), "bad SDE");
}
