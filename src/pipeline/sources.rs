//! Where the stages' images come from: the training images (an MVTec-style
//! category, a plain folder of good images, or MNIST), the part of them held
//! out for calibration, and an MVTec-layout test split.

use std::path::{Path, PathBuf};

use crate::backend::NnBackend;
use crate::data::{self, ImageSpec, Loaded, TestSet};
use crate::detect::{self, DetectOptions};
use crate::error::{Error, Result};
use crate::nn::score_model::ScoreModel;

/// The training data as `scoredd train --data D [--category C] [--digit N]`
/// names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSource {
    /// An MVTec-style category folder (holding train/good), a root of
    /// categories (with `category`), a plain folder of good images, or a
    /// folder with MNIST's t10k idx files (with `digit`).
    pub data: PathBuf,
    pub category: Option<String>,
    /// MNIST digit to train on (one-class).
    pub digit: Option<u8>,
    /// With MNIST, keep only the train half of the digit's images
    /// ([`data::mnist_halves`]: even positions), leaving the odd ones for a test.
    pub mnist_train_half: bool,
}

impl TrainSource {
    pub fn new(data: impl Into<PathBuf>, category: Option<String>) -> Self {
        TrainSource {
            data: data.into(),
            category,
            digit: None,
            mnist_train_half: false,
        }
    }

    fn root(&self) -> PathBuf {
        match &self.category {
            Some(c) => self.data.join(c),
            None => self.data.clone(),
        }
    }

    /// All the images (before the hold-out split), with a description of
    /// what was found.
    pub fn load(&self, spec: ImageSpec) -> Result<(Loaded, String)> {
        let root = self.root();
        if root.join("train").join("good").is_dir() {
            return Ok((
                data::mvtec_train(&root, spec)?,
                format!("{} (MVTec layout, train/good)", root.display()),
            ));
        }
        let is_mnist = ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"]
            .iter()
            .any(|f| root.join(f).exists());
        if is_mnist {
            let digit = self.digit.ok_or_else(|| {
                Error::Invalid(format!(
                    "{} holds MNIST: pass --digit 0-9 for one-class training",
                    root.display()
                ))
            })?;
            let all = data::mnist(&root, digit, spec)?;
            if self.mnist_train_half {
                let (train, _) = data::mnist_halves(all.images.len());
                return Ok((
                    data::select(&all, &train),
                    format!("{} (MNIST digit {digit}, even half)", root.display()),
                ));
            }
            return Ok((all, format!("{} (MNIST digit {digit})", root.display())));
        }
        if self.category.is_none() && !root.join("train").exists() {
            refuse_a_root_of_categories(&root)?;
        }
        Ok((
            data::folder(&root, spec)?,
            format!("{} (folder of good images)", root.display()),
        ))
    }

    /// The images training left out for calibration with hold-out fraction
    /// `holdout` (the same pure split as training's), with a description.
    pub fn held_out(&self, holdout: f64, spec: ImageSpec) -> Result<(Loaded, String)> {
        let (all, what) = self.load(spec)?;
        let (_, held) = data::holdout_split(all.images.len(), holdout);
        let what = format!("{} held out of {what}", held.len());
        Ok((data::select(&all, &held), what))
    }
}

/// A folder of MVTec categories given without `--category` is ambiguous:
/// training on it as a plain folder would mix the categories.
fn refuse_a_root_of_categories(root: &Path) -> Result<()> {
    let subdirs = std::fs::read_dir(root)
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().join("train").join("good").is_dir())
                .count()
        })
        .unwrap_or(0);
    if subdirs > 0 {
        return Err(Error::Invalid(format!(
            "{} holds {subdirs} MVTec categories: pick one with --category",
            root.display()
        )));
    }
    Ok(())
}

/// An MVTec-layout test split (`test/<defect>/`, `ground_truth/<defect>/`):
/// a category folder, or a root of categories with `category`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSource {
    pub data: PathBuf,
    pub category: Option<String>,
}

/// A loaded test split and the folder it came from.
#[derive(Clone, Debug)]
pub struct TestData {
    pub set: TestSet,
    pub root: PathBuf,
}

impl TestSource {
    pub fn new(data: impl Into<PathBuf>, category: Option<String>) -> Self {
        TestSource {
            data: data.into(),
            category,
        }
    }

    /// The category folder, checked to hold a test split.
    pub fn root(&self) -> Result<PathBuf> {
        let root = match &self.category {
            Some(c) => self.data.join(c),
            None => self.data.clone(),
        };
        if !root.join("test").is_dir() {
            return Err(Error::Invalid(format!(
                "{} has no test/ folder: give an MVTec-layout category (test/<defect>/, ground_truth/<defect>/), or its parent with --category",
                root.display()
            )));
        }
        Ok(root)
    }

    pub fn load(&self, spec: ImageSpec) -> Result<TestData> {
        let root = self.root()?;
        Ok(TestData {
            set: data::mvtec_test(&root, spec)?,
            root,
        })
    }

    /// The test images at the size `opts` detect at with `model`. The
    /// options are checked first, since that size comes from them.
    pub fn load_for<B: NnBackend>(
        &self,
        model: &ScoreModel<B>,
        opts: &DetectOptions,
    ) -> Result<TestData> {
        detect::validate(model, opts)?;
        self.load(ImageSpec {
            size: opts.size_for(model),
            channels: model.net.config.channels,
        })
    }
}
