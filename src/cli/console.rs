//! The pipeline's events on a terminal: a progress bar per task, log lines
//! beside it, and, where a command asks for them, checkpoints written to its
//! model file, the loss log appended to, and Ctrl-C turned into a clean stop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use scoredd::backend::AnyBackend;
use scoredd::pipeline::{Checkpoint, CheckpointKind, PipelineEvents, Progress, Stage, Task};
use scoredd::train::StepReport;
use scoredd::Error;

/// `--verbose`: on the GPU backend, one line per tuned kernel family with the
/// variant the autotuner picked for each shape class that ran (nothing on
/// the CPU backend, which has no variants).
pub fn print_tuner_choices(backend: &AnyBackend) {
    if let AnyBackend::Gpu(g) = backend {
        let lines = g.tuner.family_lines();
        if lines.is_empty() {
            eprintln!("autotune ({:?}): no tuned kernel ran", g.tuner.mode);
        }
        for line in lines {
            eprintln!("{line}");
        }
    }
}

/// A progress bar for `n` images.
pub fn image_bar(n: usize, what: &str) -> ProgressBar {
    count_bar(n, what, "images")
}

/// A progress bar over `n` things called `unit`, for `what`.
pub fn count_bar(n: usize, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{pos}}/{{len}} {unit} [{{bar:30}}] ({{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The bar a task is shown with.
fn bar_for(task: Task, total: u64) -> ProgressBar {
    let template = match task {
        Task::Training => "{spinner} step {pos}/{len} [{bar:30}] {msg} ({eta} left)",
        Task::ChoosingSettings => "{spinner} {msg} {pos}/{len} [{bar:30}] ({eta} left)",
        Task::ScoringNormals | Task::Evaluating => {
            return image_bar(total as usize, task.describe())
        }
    };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// The training loss log (CSV), opened on the first line written.
struct LossLog {
    path: PathBuf,
    /// Start a new file with a header instead of appending.
    new: bool,
    file: Option<std::fs::File>,
}

impl LossLog {
    fn write(&mut self, r: &StepReport, seconds: f64) -> Result<(), Error> {
        let io_err = |source| Error::Io {
            path: self.path.display().to_string(),
            source,
        };
        if self.file.is_none() {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io_err)?;
            if self.new {
                writeln!(f, "step,loss,grad_norm,lr,seconds").map_err(io_err)?;
            }
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        writeln!(
            f,
            "{},{},{},{},{seconds:.3}",
            r.step, r.loss, r.grad_norm, r.lr
        )
        .map_err(io_err)
    }
}

/// Terminal output for a running pipeline.
#[derive(Default)]
pub struct Console {
    bar: Option<(Task, ProgressBar)>,
    /// Where checkpoints are written (the output model file), if anywhere.
    save_to: Option<PathBuf>,
    loss_log: Option<LossLog>,
    /// Set by Ctrl-C while training; read by [`PipelineEvents::should_stop`].
    stop: Arc<AtomicBool>,
    /// Whether a training run is in progress (Ctrl-C then stops it cleanly
    /// instead of ending the process).
    training: Arc<AtomicBool>,
}

impl Console {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes every checkpoint to `path` (atomically, see `ModelFile::save`).
    pub fn saving_to(mut self, path: &Path) -> Self {
        self.save_to = Some(path.to_path_buf());
        self
    }

    /// Appends read-back losses to `path`, starting it with a header when `new`.
    pub fn logging_loss_to(mut self, path: &Path, new: bool) -> Self {
        self.loss_log = Some(LossLog {
            path: path.to_path_buf(),
            new,
            file: None,
        });
        self
    }

    /// Ctrl-C while training stops after saving a checkpoint; at any other
    /// time (nothing unsaved) it ends the process as usual.
    pub fn stopping_on_ctrl_c(self) -> Self {
        let (stop, training) = (self.stop.clone(), self.training.clone());
        // A second Ctrl-C while saving is ignored; the handler only sets the flag.
        let installed = ctrlc::set_handler(move || {
            if training.load(Ordering::SeqCst) {
                stop.store(true, Ordering::SeqCst);
            } else {
                eprintln!("interrupted");
                std::process::exit(130);
            }
        });
        if let Err(e) = installed {
            eprintln!("note: Ctrl-C will end training without saving ({e})");
        }
        self
    }

    /// A line beside the progress bar, or on stderr when there is none or it
    /// is hidden (output not a terminal), so logs of unattended runs keep it.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some((_, bar)) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    /// Ends the current bar: a training bar stays on screen (its last loss),
    /// others are cleared.
    pub fn end_bar(&mut self) {
        match self.bar.take() {
            Some((Task::Training, bar)) => bar.finish(),
            Some((_, bar)) => bar.finish_and_clear(),
            None => {}
        }
    }

    fn save(&self, c: &Checkpoint<'_>) -> Result<(), Error> {
        match &self.save_to {
            Some(path) => c.file.save(path),
            None => Ok(()),
        }
    }
}

impl PipelineEvents for Console {
    fn on_progress(&mut self, p: &Progress<'_>) {
        if self.bar.as_ref().is_none_or(|(task, _)| *task != p.task) {
            self.end_bar();
            self.bar = Some((p.task, bar_for(p.task, p.total)));
        }
        self.training
            .store(p.task == Task::Training, Ordering::SeqCst);
        let (_, bar) = self.bar.as_ref().expect("set above");
        bar.set_length(p.total);
        bar.set_position(p.done);
        if let Some(m) = p.message {
            bar.set_message(m.to_string());
        }
    }

    fn on_train_step(&mut self, r: &StepReport, seconds: f64) -> Result<(), Error> {
        match &mut self.loss_log {
            Some(log) => log.write(r, seconds),
            None => Ok(()),
        }
    }

    fn on_checkpoint(&mut self, c: &Checkpoint<'_>) -> Result<(), Error> {
        match c.kind {
            CheckpointKind::Final | CheckpointKind::Calibrated => self.end_bar(),
            CheckpointKind::Interrupted => {
                if let Some((_, bar)) = self.bar.take() {
                    bar.abandon_with_message("interrupted");
                }
            }
            CheckpointKind::Periodic | CheckpointKind::Rollback => {}
        }
        let saved = self.save(c);
        if matches!(c.kind, CheckpointKind::Final | CheckpointKind::Interrupted) {
            // Training is over and its model is saved: Ctrl-C may end the process.
            self.training.store(false, Ordering::SeqCst);
        }
        saved
    }

    fn on_log(&mut self, _stage: Stage, line: &str) {
        self.say(line);
    }

    fn should_stop(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
