//! The library pipeline in-process on the CPU backend: a tiny synthetic data
//! set, a few training steps, automatic calibration and evaluation. Checks the
//! events a caller sees (and their order), that the stages share one model in
//! memory, that the results are finite and in range, that a stop request ends
//! training with a checkpoint, and that bad input is a typed error.

use std::path::{Path, PathBuf};

use scoredd::backend::cpu::CpuBackend;
use scoredd::backend::Backend;
use scoredd::detect::DetectOptions;
use scoredd::model_file::ModelFile;
use scoredd::pipeline::{
    CalibratePlan, Checkpoint, CheckpointKind, EvalPlan, ModelStart, Pipeline, PipelineEvents,
    Progress, Quiet, RunPlan, Stage, Task, TestSource, TrainEnd, TrainPlan, TrainSource,
};
use scoredd::sde::SdeKind;
use scoredd::synth::{self, SynthConfig};
use scoredd::train::StepReport;
use scoredd::Error;

/// A fresh, empty temp folder unique to this test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scoredd-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 24 good 32 px `stripes` images to train on (6 held out), 4 good and
/// 2 per defect kind to test on.
fn textures(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    synth::generate(
        &root,
        &SynthConfig {
            seed: 3,
            size: 32,
            train: 24,
            test_good: 4,
            test_per_defect: 2,
            categories: vec!["stripes".into()],
        },
    )
    .unwrap();
    root
}

fn tiny_plan(steps: u64) -> TrainPlan {
    TrainPlan {
        steps,
        batch: 4,
        lr: 1e-3,
        log_every: 2,
        checkpoint_every: 3,
        ..TrainPlan::new(ModelStart::fresh("tiny", 1, SdeKind::Ve).unwrap())
    }
}

fn run_plan(root: &Path, steps: u64) -> RunPlan {
    RunPlan {
        evaluate: EvalPlan {
            limit: None,
            batch: 4,
        },
        ..RunPlan::new(root, Some("stripes".into()), tiny_plan(steps))
    }
}

/// What a caller saw, in order.
#[derive(Debug)]
enum Seen {
    Progress {
        task: Task,
        done: u64,
        total: u64,
    },
    Step(StepReport),
    Checkpoint {
        kind: CheckpointKind,
        step: u64,
        weights: Vec<Vec<f32>>,
    },
    Log(Stage, String),
}

/// Records every event; asks to stop once `stop_after` steps are done.
#[derive(Default)]
struct Recorder {
    seen: Vec<Seen>,
    stop_after: Option<u64>,
}

impl PipelineEvents for Recorder {
    fn on_progress(&mut self, p: &Progress<'_>) {
        self.seen.push(Seen::Progress {
            task: p.task,
            done: p.done,
            total: p.total,
        });
    }
    fn on_train_step(&mut self, r: &StepReport, _seconds: f64) -> Result<(), Error> {
        self.seen.push(Seen::Step(*r));
        Ok(())
    }
    fn on_checkpoint(&mut self, c: &Checkpoint<'_>) -> Result<(), Error> {
        self.seen.push(Seen::Checkpoint {
            kind: c.kind,
            step: c.step,
            weights: c.file.weights.clone(),
        });
        Ok(())
    }
    fn on_log(&mut self, stage: Stage, line: &str) {
        self.seen.push(Seen::Log(stage, line.to_string()));
    }
    fn should_stop(&mut self) -> bool {
        let done = self
            .seen
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Seen::Progress {
                        task: Task::Training,
                        ..
                    }
                )
            })
            .count() as u64;
        self.stop_after.is_some_and(|n| done >= n)
    }
}

impl Recorder {
    /// Position of the first / last event matching `f`.
    fn first(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen
            .iter()
            .position(f)
            .expect("an event that never came")
    }
    fn last(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen
            .iter()
            .rposition(f)
            .expect("an event that never came")
    }
    fn checkpoint(&self, kind: CheckpointKind) -> &[Vec<f32>] {
        self.seen
            .iter()
            .find_map(|s| match s {
                Seen::Checkpoint {
                    kind: k, weights, ..
                } if *k == kind => Some(weights.as_slice()),
                _ => None,
            })
            .expect("no such checkpoint")
    }
}

fn is_task(s: &Seen, t: Task) -> bool {
    matches!(s, Seen::Progress { task, .. } if *task == t)
}

fn is_checkpoint(s: &Seen, k: CheckpointKind) -> bool {
    matches!(s, Seen::Checkpoint { kind, .. } if *kind == k)
}

fn in_unit(v: Option<f64>) -> bool {
    v.is_some_and(|v| (0.0..=1.0).contains(&v))
}

#[test]
fn train_calibrate_evaluate_in_one_go() {
    let dir = tmpdir("run");
    let root = textures(&dir);
    let be = CpuBackend::new();
    let mut rec = Recorder::default();
    let result = Pipeline::new(&be, &mut rec)
        .run(&run_plan(&root, 6))
        .unwrap();

    // Events in order: training (steps, a periodic checkpoint, the final
    // one), then calibration (the search, the threshold, the calibrated
    // file), then evaluation.
    let (cal_first, eval_first) = (
        rec.first(|s| is_task(s, Task::ChoosingSettings)),
        rec.first(|s| is_task(s, Task::Evaluating)),
    );
    assert!(rec.first(|s| is_task(s, Task::Training)) < rec.first(|s| matches!(s, Seen::Step(_))));
    assert!(
        rec.first(|s| is_checkpoint(s, CheckpointKind::Periodic))
            < rec.last(|s| is_task(s, Task::Training))
    );
    let final_at = rec.first(|s| is_checkpoint(s, CheckpointKind::Final));
    assert!(rec.last(|s| is_task(s, Task::Training)) < final_at && final_at < cal_first);
    assert!(
        rec.last(|s| is_task(s, Task::ChoosingSettings))
            < rec.first(|s| is_task(s, Task::ScoringNormals))
    );
    let calibrated_at = rec.first(|s| is_checkpoint(s, CheckpointKind::Calibrated));
    assert!(
        rec.last(|s| is_task(s, Task::ScoringNormals)) < calibrated_at
            && calibrated_at < eval_first
    );
    assert!(rec.seen[..cal_first].iter().all(|s| match s {
        Seen::Progress { task, .. } => *task == Task::Training,
        Seen::Log(stage, _) => *stage == Stage::Train,
        _ => true,
    }));
    let steps: Vec<u64> = rec
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Step(r) => Some(r.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [2, 4, 6], "read back every 2 steps");
    let periodic: Vec<u64> = rec
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Checkpoint {
                kind: CheckpointKind::Periodic,
                step,
                ..
            } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(periodic, [3, 6]);
    for s in &rec.seen {
        if let Seen::Progress { done, total, .. } = s {
            assert!(done <= total, "{s:?}");
        }
    }
    assert!(rec
        .seen
        .iter()
        .any(|s| matches!(s, Seen::Log(Stage::Train, l) if l.contains("holding out 6 of 24"))));

    // One model through the stages: what calibration and evaluation used is
    // the final checkpoint's (EMA) weights, on the backend all along.
    let weights: Vec<Vec<f32>> = result
        .model
        .params
        .values
        .iter()
        .map(|t| be.read(t).unwrap())
        .collect();
    assert_eq!(weights, rec.checkpoint(CheckpointKind::Final));
    assert_eq!(weights, result.file.weights);
    assert_eq!(
        rec.checkpoint(CheckpointKind::Calibrated),
        result.file.weights.as_slice()
    );
    assert_eq!(result.file.meta.step, 6);
    assert_eq!(result.model.meta.calibration, result.file.meta.calibration);
    assert_eq!(result.model.meta.detection, result.file.meta.detection);
    assert!(result.file.meta.selection.is_some() && result.file.meta.training.is_some());
    assert!(
        !result.file.extra.is_empty(),
        "the calibrated file can still be resumed"
    );

    // Finite results in their ranges.
    assert_eq!(result.train.end, TrainEnd::Steps);
    assert!(result.train.smoothed_loss.is_some_and(f32::is_finite));
    let cal = result.calibrated.as_ref().unwrap();
    let c = &cal.calibration;
    assert!(c.threshold.is_finite() && c.low <= c.threshold && c.threshold <= c.high);
    assert_eq!(
        (c.normals, cal.scores.len()),
        (3, 3),
        "6 held out: 3 choose, 3 set the threshold"
    );
    assert!(cal.scores.iter().all(|s| s.is_finite() && *s >= 0.0));
    let sel = cal.selection.as_ref().unwrap();
    assert!(in_unit(Some(sel.chosen_pixel_auroc)) && in_unit(Some(sel.chosen_image_auroc)));
    let ev = result.evaluation.as_ref().unwrap();
    assert_eq!(ev.set.items.len(), 4 + 2 * synth::DEFECTS.len());
    assert!(ev.found.maps.iter().flatten().all(|v| v.is_finite()));
    let m = &ev.overall;
    assert!(
        in_unit(m.image_auroc) && in_unit(m.pixel_auroc) && in_unit(m.aupro) && in_unit(m.f1_max),
        "{m:?}"
    );
    let v = ev.verdicts.as_ref().unwrap();
    assert!((0.0..=1.0).contains(&v.accuracy) && v.threshold == c.threshold);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stop_request_ends_training_with_a_checkpoint_and_nothing_after() {
    let dir = tmpdir("stop");
    let root = textures(&dir);
    let be = CpuBackend::new();
    let mut rec = Recorder {
        stop_after: Some(2),
        ..Default::default()
    };
    let result = Pipeline::new(&be, &mut rec)
        .run(&run_plan(&root, 50))
        .unwrap();
    assert_eq!(result.train.end, TrainEnd::Interrupted);
    assert_eq!(result.train.step, 2);
    assert!(result.calibrated.is_none() && result.evaluation.is_none());
    assert!(matches!(
        rec.seen.last(),
        Some(Seen::Checkpoint {
            kind: CheckpointKind::Interrupted,
            step: 2,
            ..
        })
    ));
    // The interrupted checkpoint resumes where it stopped.
    let resumed = TrainPlan {
        start: ModelStart::Resume(Box::new(result.file)),
        ..tiny_plan(3)
    };
    let source = TrainSource::new(&root, Some("stripes".into()));
    let trained = Pipeline::new(&be, &mut Quiet)
        .train(&resumed, &source)
        .unwrap();
    assert_eq!((trained.summary.start_step, trained.summary.step), (2, 3));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_a_typed_error() {
    let dir = tmpdir("bad");
    let be = CpuBackend::new();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut rec = Recorder::default();
    let p = &mut Pipeline::new(&be, &mut rec);

    // An empty data folder: explained before any step or checkpoint.
    let err = p
        .train(&tiny_plan(4), &TrainSource::new(&empty, None))
        .err()
        .expect("training on no images must fail");
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("no usable images")),
        "{err}"
    );
    let err = p.run(&run_plan(&empty, 4)).err().unwrap();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // A plan that cannot run.
    let err = p
        .train(&tiny_plan(0), &TrainSource::new(&empty, None))
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("--steps")),
        "{err}"
    );
    assert!(!rec
        .seen
        .iter()
        .any(|s| matches!(s, Seen::Checkpoint { .. } | Seen::Step(_))));

    // A folder without a test split, and too few normals for --auto.
    let root = textures(&dir);
    let trained = Pipeline::new(&be, &mut Quiet)
        .train(
            &tiny_plan(2),
            &TrainSource::new(&root, Some("stripes".into())),
        )
        .unwrap();
    let mut model = trained.model().unwrap();
    let opts = DetectOptions::from_settings(model.meta.detection.clone());
    let err = TestSource::new(&empty, None)
        .load_for(&model, &opts)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("no test/ folder")),
        "{err}"
    );
    let plan = CalibratePlan {
        auto: true,
        ..CalibratePlan::default()
    };
    let err = Pipeline::new(&be, &mut Quiet)
        .calibrate(&mut model, &trained.held_out[..3], opts.clone(), &plan)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("at least 4")),
        "{err}"
    );
    // Images of another size than the model's.
    let wrong = vec![vec![0.5f32; 16 * 16]; 2];
    let err = Pipeline::new(&be, &mut Quiet)
        .calibrate(&mut model, &wrong, opts, &CalibratePlan::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::Shape { .. } | Error::Invalid(_)),
        "{err}"
    );
    assert!(
        model.meta.calibration.is_none(),
        "a failed calibration stores nothing"
    );
    let _ = ModelFile::from_bytes(&trained.file.to_bytes().unwrap(), "roundtrip").unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
