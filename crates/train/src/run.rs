//! The training loop: the same code on every backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bapo_data::epoch_order;
use bapo_model::{CausalLm, apply_lora, export_peft_adapter};
use burn::module::Module;
use sha2::{Digest, Sha256};

use crate::backend::BackendDevice;
use crate::checkpoint::{self, CheckpointState};
use crate::config::RunConfig;
use crate::error::with_causes;
use crate::eval::{EvalResult, Evaluation, comparison_table, evaluate};
use crate::eval_cache::{StartKey, Stored, start_evaluation};
use crate::example::AnchoredExample;
use crate::metrics::{RunLogs, peak_rss_mib, put_evaluation, read_log, rss_mib, write_item_labels};
use crate::optimizer::AdamW;
use crate::optimizer_step::{StepError, StepReport, optimizer_step};
use crate::params::{trainable_count, trainable_parameters};
use crate::prepare::{Prepared, build_objective, prepare};
use crate::progress::{Progress, WARNING};
use crate::rundir::{self, RunLock};
use crate::schedule::learning_rate;
use crate::step::StepSetup;
use crate::{TrainError, plots};
use bapo_rundir::files::{
    CONFIG_FILE, EVAL_FILE, EVAL_ITEMS_FILE, EXPORT_DIR, METRICS_FILE, PLOTS_DIR, SUMMARY_FILE,
    is_finished,
};
use bapo_rundir::{PlotError, Row};
use indicatif::ProgressBar;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from the run directory's newest checkpoint.
    pub resume: bool,
    /// Recompute cached anchors and the stored evaluation before training.
    pub force_anchors: bool,
    /// No progress output.
    pub quiet: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps: usize,
    /// Loss of every step of this run (resumed runs: from the checkpoint on).
    pub losses: Vec<f64>,
    pub start: Option<EvalResult>,
    pub end: EvalResult,
    /// Start-versus-end table (Markdown).
    pub table: String,
}

fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The policy to train: the loaded model, with LoRA adapters if configured (their random
/// initial factors come from the device seed, so they are the same on every run).
pub(crate) fn build_policy(
    config: &RunConfig,
    model: &CausalLm,
    device: &burn::tensor::Device,
) -> Result<CausalLm, TrainError> {
    let policy = model.clone();
    if !config.lora.enabled {
        return Ok(policy);
    }
    device.seed(config.training.seed);
    let settings = &config.lora.settings;
    // Every weight these models adapt has one side of the model's width or less, so a larger
    // rank adds nothing and would only allocate (issue #26: rank 1e9 aborted the process).
    let width = match &policy {
        CausalLm::Llama(m) => m.width(),
        CausalLm::Gpt2(m) => m.wte.weight.val().dims()[1],
    };
    if settings.rank > width {
        return Err(TrainError::LoraRankTooLarge {
            rank: settings.rank,
            width,
        });
    }
    let policy = match policy {
        CausalLm::Llama(m) => CausalLm::Llama(apply_lora(m, settings)?),
        CausalLm::Gpt2(m) => CausalLm::Gpt2(apply_lora(m, settings)?),
    };
    if trainable_count(&policy) == 0 {
        return Err(TrainError::LoraMatchesNothing(settings.target.clone()));
    }
    Ok(policy)
}

/// Takes the run directory for this process: locked for the whole run, refused when it
/// holds a run and `--resume` was not given, or when `--resume` meets another config.
fn open_run(
    run: &Path,
    config_text: &str,
    options: &TrainOptions,
    progress: &Progress,
) -> Result<RunLock, TrainError> {
    if options.resume && !run.exists() {
        progress.line(format!(
            "no run directory {} yet: starting a new run",
            run.display()
        ));
    }
    let lock = RunLock::acquire(run)?;
    if run.join(METRICS_FILE).exists() && !options.resume {
        return Err(TrainError::RunExists(run.to_path_buf()));
    }
    let config_copy = run.join(CONFIG_FILE);
    if options.resume && config_copy.exists() {
        let previous =
            std::fs::read_to_string(&config_copy).map_err(|e| TrainError::io(&config_copy, e))?;
        let differences =
            rundir::config_differences(&previous, config_text).map_err(|message| {
                TrainError::RunConfigUnreadable {
                    config: config_copy.clone(),
                    message,
                }
            })?;
        if !differences.is_empty() {
            return Err(TrainError::ResumeWithAnotherConfig {
                config: config_copy,
                differences,
            });
        }
    }
    Ok(lock)
}

/// `--resume`: the newest checkpoint of the run restored into `policy` and `optimizer`
/// (refused when it was written with another config or on other inputs, or when the run is
/// finished), and its step; `None` when there is no checkpoint, after clearing the logs of a
/// run killed before its first one.
fn resume(
    config: &RunConfig,
    policy: CausalLm,
    optimizer: &mut AdamW,
    prepared: &Prepared,
    total_steps: usize,
    progress: &Progress,
) -> Result<(CausalLm, Option<usize>), TrainError> {
    let run = &config.output.dir;
    let Some(ck) = checkpoint::latest(run)? else {
        if run.join(METRICS_FILE).exists() {
            // Killed before its first checkpoint: nothing to resume from, and its logs
            // would double the steps it redoes.
            progress.line(format!(
                "no checkpoint yet in {}: starting from step 0 (its logs are started again)",
                run.display()
            ));
            for log in [METRICS_FILE, EVAL_FILE, EVAL_ITEMS_FILE] {
                let path = run.join(log);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
                }
            }
        }
        return Ok((policy, None));
    };
    check_checkpoint_of_this_run(config, &ck, prepared)?;
    let policy = checkpoint::restore(&ck, policy, optimizer, &prepared.device)?;
    let step = ck.state.step;
    if step >= total_steps && is_finished(run) {
        return Err(TrainError::AlreadyFinished {
            run: run.to_path_buf(),
            total_steps,
        });
    }
    progress.line(if step >= total_steps {
        format!(
            "all {total_steps} steps were done ({}); finishing the end phase: final evaluation, summary, plots, export",
            ck.dir.display()
        )
    } else {
        format!("resuming from {} (step {step})", ck.dir.display())
    });
    Ok((policy, Some(step)))
}

/// The metrics row of a step: its metrics' means over the step's `per_step` examples, the
/// gradient norm, learning rate, epoch, throughput and the process's memory.
fn step_row(
    report: StepReport,
    per_step: usize,
    lr: f64,
    epoch: f64,
    seconds: f64,
) -> BTreeMap<String, f64> {
    let mut row: BTreeMap<String, f64> = report
        .sums
        .into_iter()
        .map(|(k, v)| (k, v / per_step as f64))
        .collect();
    row.insert("grad_norm".into(), report.grad_norm);
    row.insert("learning_rate".into(), lr);
    row.insert("epoch".into(), epoch);
    row.insert(
        "tokens_per_second".into(),
        report.tokens as f64 / seconds.max(1e-9),
    );
    if let Some(peak) = peak_rss_mib() {
        row.insert("peak_rss_mib".into(), peak);
    }
    if let Some(now) = rss_mib() {
        row.insert("rss_mib".into(), now);
    }
    row
}

/// Trains `config`'s run: the library entry point behind `bapo train` (a third party links
/// its own objective crates and calls this). In order: the run directory ([`open_run`]),
/// everything before the first step (`prepare`, then [`Trainer::start`]: the resume, the
/// logs, the evaluation before training), the steps ([`Trainer::steps`]) and the end phase
/// ([`Trainer::end`]).
pub fn train(config: &RunConfig, options: &TrainOptions) -> Result<RunSummary, TrainError> {
    let progress = Progress {
        quiet: options.quiet,
    };
    let began = Instant::now();
    let config_text = config.to_toml();
    // The objective's settings are checked before the disk is touched (the rest of the
    // config was when it was read): a refused config leaves no directory behind.
    build_objective(config)?;
    // One run per directory, for the whole run (a second one is refused, naming this one).
    let _lock = open_run(&config.output.dir, &config_text, options, &progress)?;
    let prepared = prepare(config, options.force_anchors, &progress)?;
    for line in &prepared.summary {
        progress.line(line);
    }
    let (mut trainer, policy) =
        Trainer::start(config, &config_text, &prepared, options, &progress)?;
    let policy = trainer.steps(policy)?;
    trainer.end(policy, began)
}

/// A run from its first step to its end phase: what the steps share with the code around
/// them (the optimizer, the logs, the data order, the last good checkpoint, what was trained).
struct Trainer<'a> {
    config: &'a RunConfig,
    prepared: &'a Prepared,
    progress: &'a Progress,
    quiet: bool,
    /// What checkpoints record: the config without the run's own location.
    config_sha: String,
    optimizer: AdamW,
    /// Examples per optimizer step.
    per_step: usize,
    total_steps: usize,
    /// The first step this process runs (a resumed run's checkpoint step).
    start_step: usize,
    logs: RunLogs,
    order: DataOrder,
    /// A resumed run's last good checkpoint is the one it resumed from.
    last_checkpoint: Option<usize>,
    /// Every step's loss, for the summary.
    losses: Vec<f64>,
    trained_tokens: usize,
}

impl<'a> Trainer<'a> {
    /// Everything between `prepare` and the first step: the policy and the optimizer, the
    /// step counts, the resume, the run's copy of its config (`config_text`), the logs, and
    /// the evaluation before training. Returns the trainer and the policy to train.
    fn start(
        config: &'a RunConfig,
        config_text: &str,
        prepared: &'a Prepared,
        options: &TrainOptions,
        progress: &'a Progress,
    ) -> Result<(Trainer<'a>, CausalLm), TrainError> {
        let mut policy = build_policy(config, &prepared.model.model, &prepared.train_device)?;
        let mut optimizer = AdamW::new(config.optimizer.clone());
        let t = &config.training;
        let (per_step, total_steps) = step_counts(t, prepared.train.len())?;
        if let Some(warning) = warmup_warning(config, total_steps) {
            progress.line(warning);
        }
        let mut resumed_at = None;
        if options.resume {
            let resumed = resume(
                config,
                policy,
                &mut optimizer,
                prepared,
                total_steps,
                progress,
            )?;
            policy = resumed.0;
            resumed_at = resumed.1;
        }
        let run = &config.output.dir;
        // The run's copy of its config, once a resume is accepted: a refused one leaves it
        // as it was (the keys a resume may change are written anew).
        write_config_copy(run, config_text)?;
        let logs = open_logs(config, resumed_at, total_steps)?;
        write_item_labels(run, &prepared.eval.labels)?;
        progress.line(format!(
            "objective `{}`, {} trainable parameters, {total_steps} steps of {per_step} examples on `{}`",
            prepared.objective.name(),
            trainable_count(&policy),
            t.backend
        ));
        let start_step = resumed_at.unwrap_or(0);
        let mut trainer = Trainer {
            config,
            prepared,
            progress,
            quiet: options.quiet,
            config_sha: sha256_hex(&rundir::fingerprint_text(config)),
            optimizer,
            per_step,
            total_steps,
            start_step,
            logs,
            order: DataOrder {
                examples: prepared.train.len(),
                seed: t.seed,
                shuffle: config.data.shuffle,
                epochs: BTreeMap::new(),
            },
            last_checkpoint: (start_step > 0).then_some(start_step),
            losses: Vec::new(),
            trained_tokens: 0,
        };
        if config.eval.at_start && start_step == 0 {
            trainer.evaluate_at_start(&policy, options.force_anchors)?;
        }
        Ok((trainer, policy))
    }

    /// The evaluation suite on `policy`, timed.
    fn evaluate(&self, policy: &CausalLm) -> Result<Evaluation, TrainError> {
        let prepared = self.prepared;
        let started = Instant::now();
        let result = evaluate(
            &policy.valid(),
            &prepared.reference,
            &prepared.eval,
            self.config.eval_limits(),
            prepared.model.pad_token,
            &prepared.device,
        );
        let seconds = started.elapsed().as_secs_f64();
        let tokens = prepared.eval.sequence_tokens();
        self.progress.line(format!(
            "evaluation took {seconds:.1} s ({tokens} tokens, {:.0} tokens/s)",
            tokens as f64 / seconds.max(1e-9)
        ));
        result
    }

    /// The evaluation before training, logged at step 0 (reused when stored).
    fn evaluate_at_start(&mut self, policy: &CausalLm, force: bool) -> Result<(), TrainError> {
        let now = (force, self.progress);
        let evaluation = evaluation_before_training(self.config, self.prepared, now, || {
            self.progress.line("evaluating the model before training");
            self.evaluate(policy)
        })?;
        self.logs.evaluation(0, &evaluation)
    }

    /// Every step from the start step on; returns the trained policy.
    fn steps(&mut self, mut policy: CausalLm) -> Result<CausalLm, TrainError> {
        let prepared = self.prepared;
        let t = &self.config.training;
        let setup = StepSetup {
            objective: prepared.objective.as_ref(),
            needs: &prepared.needs,
            live_reference: prepared
                .needs
                .needs_live_reference()
                .then_some(&prepared.reference),
            packing: t.packing(),
            pad_token: prepared.model.pad_token,
            device: &prepared.train_device,
            max_grad_norm: t.max_grad_norm,
            memory: t.memory_saving(),
        };
        let bar = self
            .progress
            .bar((self.total_steps - self.start_step) as u64, "train");
        for step in self.start_step..self.total_steps {
            policy = self.step(policy, step, &setup, &bar)?;
        }
        bar.finish_and_clear();
        Ok(policy)
    }

    /// Optimizer step `step` (0-based): the update, its row in the logs and on screen, and
    /// the checkpoint and evaluation when their intervals fall on it.
    fn step(
        &mut self,
        policy: CausalLm,
        step: usize,
        setup: &StepSetup<'_>,
        bar: &ProgressBar,
    ) -> Result<CausalLm, TrainError> {
        let config = self.config;
        let started = Instant::now();
        let lr = learning_rate(
            config.schedule.kind,
            config.optimizer.learning_rate,
            step,
            config.schedule.warmup_steps,
            self.total_steps,
        );
        let micro_batches = self.micro_batches(step);
        let (policy, report) =
            match optimizer_step(policy, &mut self.optimizer, setup, &micro_batches, lr) {
                Ok(done) => done,
                Err(StepError::Failed(e)) => return Err(e),
                Err(StepError::NonFinite { what, micro_batch }) => {
                    // The examples at fault: the micro-batch whose loss, or the whole step.
                    let batch = match micro_batch {
                        Some(i) => micro_batches[i].clone(),
                        None => micro_batches.concat(),
                    };
                    let last = self.last_checkpoint;
                    return Err(non_finite(config, step + 1, what, &batch, last));
                }
            };
        let seconds = started.elapsed().as_secs_f64();
        let (tokens, grad_norm) = (report.tokens, report.grad_norm);
        self.trained_tokens += tokens;
        let epoch = ((step + 1) * self.per_step) as f64 / self.prepared.train.len() as f64;
        let row = step_row(report, self.per_step, lr, epoch, seconds);
        self.losses.push(row["loss"]);
        let done = step + 1;
        if done.is_multiple_of(config.training.logging_steps) || done == self.total_steps {
            self.logs.step(done, &row)?;
        }
        let speed = tokens as f64 / seconds.max(1e-9);
        self.show_step(bar, done, &row, (lr, grad_norm, speed));
        self.at_intervals(&policy, done)?;
        Ok(policy)
    }

    /// The examples of step `step`'s micro-batches, in the run's data order.
    fn micro_batches(&mut self, step: usize) -> Vec<Vec<&'a AnchoredExample>> {
        let prepared: &'a Prepared = self.prepared;
        let train = &prepared.train;
        let batch_size = self.config.training.batch_size;
        (0..self.config.training.gradient_accumulation_steps)
            .map(|micro| {
                let first = step * self.per_step + micro * batch_size;
                (first..first + batch_size)
                    .map(|p| &train[self.order.index(p)])
                    .collect()
            })
            .collect()
    }

    /// A finished step on the progress bar, or as a line where the bar is hidden.
    fn show_step(
        &self,
        bar: &ProgressBar,
        done: usize,
        row: &BTreeMap<String, f64>,
        (lr, grad_norm, speed): (f64, f64, f64),
    ) {
        let margin = row.get("rewards/margins").copied().unwrap_or(f64::NAN);
        bar.inc(1);
        bar.set_message(format!(
            "loss {:.4} margin {margin:.3} {speed:.0} tok/s",
            row["loss"]
        ));
        if bar.is_hidden() && !self.quiet {
            self.progress.line(format!(
                "step {done}/{} loss {:.4} margin {margin:.4} grad_norm {grad_norm:.3} lr {lr:.2e} {speed:.0} tokens/s",
                self.total_steps, row["loss"],
            ));
        }
    }

    /// The checkpoint and the evaluation after step `done`, where their intervals fall on it
    /// (the last step has its own, in the end phase).
    fn at_intervals(&mut self, policy: &CausalLm, done: usize) -> Result<(), TrainError> {
        let config = self.config;
        let interval = |n: usize| n > 0 && done.is_multiple_of(n) && done < self.total_steps;
        if interval(config.checkpoint.interval) {
            let at = CheckpointAt {
                step: done,
                config_sha: &self.config_sha,
                last_good: self.last_checkpoint,
            };
            write_checkpoint(config, at, policy, &self.optimizer, self.prepared)?;
            self.last_checkpoint = Some(done);
        }
        if interval(config.eval.interval) {
            let evaluation = self.evaluate(policy)?;
            self.logs.evaluation(done, &evaluation)?;
        }
        Ok(())
    }

    /// After the last step: its checkpoint (unless the run resumed into its end phase), the
    /// final evaluation, the end phase ([`finish`]) and the record that the run finished.
    fn end(mut self, policy: CausalLm, began: Instant) -> Result<RunSummary, TrainError> {
        let (config, total_steps) = (self.config, self.total_steps);
        if self.start_step < total_steps {
            let at = CheckpointAt {
                step: total_steps,
                config_sha: &self.config_sha,
                last_good: self.last_checkpoint,
            };
            let dir = write_checkpoint(config, at, &policy, &self.optimizer, self.prepared)?;
            self.progress.line(format!("checkpoint: {}", dir.display()));
        }
        self.progress.line("evaluating the trained model");
        let end = self.evaluate(&policy)?;
        self.logs.evaluation(total_steps, &end)?;
        let (start, table) = finish(config, &policy, self.prepared, &end.metrics, self.progress)?;
        let run = config.output.dir.clone();
        let cost = rundir::Cost {
            resumed_at: self.start_step,
            tokens: self.trained_tokens,
            seconds: began.elapsed().as_secs_f64(),
        };
        rundir::mark_finished(&run, total_steps, &cost)?;
        Ok(RunSummary {
            run_dir: run,
            steps: total_steps,
            losses: self.losses,
            start,
            end: end.metrics,
            table,
        })
    }
}

/// The run's copy of its config, written whole and renamed into place.
fn write_config_copy(run: &Path, config_text: &str) -> Result<(), TrainError> {
    let config_copy = run.join(CONFIG_FILE);
    let partial = run.join("config.toml.partial");
    std::fs::write(&partial, config_text).map_err(|e| TrainError::io(&partial, e))?;
    std::fs::rename(&partial, &config_copy).map_err(|e| TrainError::io(&config_copy, e))
}

/// The run's logs, keeping what the checkpoint a run resumed from (at `resumed_at`) covers.
/// A run resumed into its end phase redoes the final evaluation, so its row (if the killed
/// run wrote it) goes.
fn open_logs(
    config: &RunConfig,
    resumed_at: Option<usize>,
    total_steps: usize,
) -> Result<RunLogs, TrainError> {
    let keep_eval = resumed_at.map(|step| {
        if step >= total_steps {
            total_steps - 1
        } else {
            step
        }
    });
    RunLogs::open(
        &config.output.dir,
        resumed_at,
        keep_eval,
        config.output.tensorboard,
    )
}

/// The end phase after the final evaluation (`end`, already logged): the start-versus-end
/// table in summary.md, the plots and the export. Returns the evaluation before training
/// (when there was one) and the table.
fn finish(
    config: &RunConfig,
    policy: &CausalLm,
    prepared: &Prepared,
    end: &EvalResult,
    progress: &Progress,
) -> Result<(Option<EvalResult>, String), TrainError> {
    let run = &config.output.dir;
    let evals = read_log(&run.join(EVAL_FILE))?;
    let start = evals.iter().find(|row| row.step() == 0).map(Row::numbers);
    let table = comparison_table(
        start.as_ref().unwrap_or(&EvalResult::new()),
        end,
        config.data.user.as_deref(),
    );
    write_summary(run, config, &table)?;
    match plots::write_plots(run) {
        Ok(files) if !files.is_empty() => {
            progress.line(format!("plots: {}", run.join(PLOTS_DIR).display()))
        }
        Ok(_) => {}
        // A missing font is a note; a plot that could not be written fails the run, whose
        // end phase `--resume` then finishes.
        Err(PlotError::NoFont(e)) => progress.line(format!("plots skipped: {e}")),
        Err(PlotError::Write(e) | PlotError::BadFont(e)) => {
            return Err(TrainError::Io {
                path: run.join(PLOTS_DIR),
                message: format!(
                    "{e}; the run's checkpoints and logs are complete: `--resume` writes the rest"
                ),
            });
        }
    }
    if config.checkpoint.export {
        let dir = run.join(EXPORT_DIR);
        if dir.exists() {
            // Renamed into place only when whole: an end phase killed after it resumes past it.
            progress.line(format!("export already written: {}", dir.display()));
        } else {
            // A failed export fails the run, as a failed plot does: it is not finished
            // without what its config asks for (issue #26: it once exited 0 and finished).
            let what = export(config, policy, &prepared.model, &dir).map_err(|e| {
                TrainError::Io {
                    path: dir.clone(),
                    message: format!(
                        "the export failed: {}; the run's checkpoints and logs are complete: `--resume` exports it",
                        with_causes(&e)
                    ),
                }
            })?;
            progress.line(what);
        }
    }
    Ok((start, table))
}

/// Refuses checkpoint `ck` as one of this run's (to resume it, or to write its evaluation
/// into the run's logs) when it was written with another config, or on a data file or model
/// that has changed since.
fn check_checkpoint_of_this_run(
    config: &RunConfig,
    ck: &checkpoint::Checkpoint,
    prepared: &Prepared,
) -> Result<(), TrainError> {
    let recorded = &ck.state.config_sha256;
    // The data's path is out of the fingerprint because the checkpoint has the data's hash;
    // one written before it recorded that hash resumes only from the same path.
    let current = *recorded == sha256_hex(&rundir::fingerprint_text(config))
        && ck.state.data_sha256.is_some();
    let earlier = rundir::earlier_fingerprint_texts(config)
        .iter()
        .any(|text| *recorded == sha256_hex(text));
    if !current && !earlier {
        return Err(TrainError::CheckpointOfAnotherConfig(ck.dir.clone()));
    }
    check_inputs_unchanged(config, ck, prepared)
}

/// Refuses a resume whose data file or model changed since checkpoint `ck` was written (the
/// config can name the same path for other content).
fn check_inputs_unchanged(
    config: &RunConfig,
    ck: &checkpoint::Checkpoint,
    prepared: &Prepared,
) -> Result<(), TrainError> {
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    for (key, path, recorded, now) in [
        (
            "data.path",
            &config.data.path,
            &ck.state.data_sha256,
            &prepared.data_sha256,
        ),
        (
            "model.path",
            &config.model.path,
            &ck.state.model_sha256,
            &prepared.model_sha256,
        ),
    ] {
        if let Some(recorded) = recorded
            && recorded != now
        {
            return Err(TrainError::InputChanged {
                key,
                path: path.to_path_buf(),
                checkpoint: ck.dir.clone(),
                then: short(recorded),
                now: short(now),
            });
        }
    }
    Ok(())
}

/// Examples per optimizer step and the run's step count, refused when they overflow (e.g. an
/// absurd `training.epochs`).
fn step_counts(
    t: &crate::config::TrainingSection,
    examples: usize,
) -> Result<(usize, usize), TrainError> {
    let per_step = t
        .batch_size
        .checked_mul(t.gradient_accumulation_steps)
        .ok_or(TrainError::BatchTooLarge {
            batch_size: t.batch_size,
            accumulation: t.gradient_accumulation_steps,
        })?;
    // A step takes distinct examples: one larger than the data would repeat examples within
    // a step (and absurd sizes would only allocate; issue #26).
    if per_step > examples {
        let (key, value) = if t.batch_size > examples {
            ("training.batch_size", t.batch_size)
        } else {
            (
                "training.gradient_accumulation_steps",
                t.gradient_accumulation_steps,
            )
        };
        return Err(TrainError::StepPastTheData {
            key,
            value,
            per_step,
            examples,
        });
    }
    let total = match t.max_steps {
        Some(steps) => steps,
        None => t
            .epochs
            .checked_mul(examples)
            .map(|n| n.div_ceil(per_step))
            .ok_or(TrainError::TooManyEpochs {
                epochs: t.epochs,
                examples,
            })?,
    };
    // The data cursor addresses every example position of the run.
    total
        .checked_mul(per_step)
        .ok_or(TrainError::TooManyPositions {
            steps: total,
            per_step,
        })?;
    Ok((per_step, total))
}

/// A warning when `schedule.warmup_steps` reaches past the run's steps: the learning rate
/// never gets to `optimizer.learning_rate` (issue #26: 1,000 warmup steps of a 50-step run
/// trained at 5% of it without a word).
fn warmup_warning(config: &RunConfig, total_steps: usize) -> Option<String> {
    let warmup = config.schedule.warmup_steps;
    (warmup >= total_steps && warmup > 0).then(|| {
        let peak = learning_rate(
            config.schedule.kind,
            config.optimizer.learning_rate,
            total_steps.saturating_sub(1),
            warmup,
            total_steps,
        );
        format!(
            "{WARNING} `schedule.warmup_steps` = {warmup} is not less than the run's {total_steps} steps: the learning rate never reaches `optimizer.learning_rate` = {:e} (at most {peak:.2e})",
            config.optimizer.learning_rate
        )
    })
}

/// The data cursor: position `p` of the stream of examples is example
/// `epoch_order(epoch = p / N)[p % N]`, so a step's batch depends on the step alone.
struct DataOrder {
    examples: usize,
    seed: u64,
    shuffle: bool,
    epochs: BTreeMap<u64, Vec<usize>>,
}

impl DataOrder {
    fn index(&mut self, position: usize) -> usize {
        let epoch = (position / self.examples) as u64;
        let (n, seed, shuffle) = (self.examples, self.seed, self.shuffle);
        self.epochs
            .entry(epoch)
            .or_insert_with(|| epoch_order(n, seed, epoch, shuffle))[position % n]
    }
}

fn non_finite(
    config: &RunConfig,
    step: usize,
    what: &str,
    batch: &[&AnchoredExample],
    last_checkpoint: Option<usize>,
) -> TrainError {
    let mut lines: Vec<usize> = batch.iter().map(|e| e.tokens.line).collect();
    lines.sort_unstable();
    lines.dedup();
    TrainError::NonFinite {
        step,
        what: what.to_string(),
        data: config.data.path.clone(),
        lines,
        checkpoint: last_checkpoint.map(|s| checkpoint::step_dir(&config.output.dir, s)),
    }
}

/// Which checkpoint [`write_checkpoint`] writes: its step, the config's fingerprint, and the
/// run's last good checkpoint before it (named when this one cannot be written).
struct CheckpointAt<'a> {
    step: usize,
    config_sha: &'a str,
    last_good: Option<usize>,
}

/// Writes the checkpoint of `at.step`; refuses weights that are not finite, which would be
/// resumed and exported as if trained (issue #26: one was called "the last good checkpoint").
fn write_checkpoint(
    config: &RunConfig,
    at: CheckpointAt<'_>,
    policy: &CausalLm,
    optimizer: &AdamW,
    prepared: &Prepared,
) -> Result<PathBuf, TrainError> {
    let parameters = trainable_parameters(policy);
    let (moments, optimizer_steps) = optimizer.state_tensors();
    if let Some(tensor) =
        checkpoint::first_non_finite(&parameters).or_else(|| checkpoint::first_non_finite(&moments))
    {
        return Err(TrainError::NonFiniteWeights {
            step: at.step,
            tensor,
            checkpoint: at
                .last_good
                .map(|s| checkpoint::step_dir(&config.output.dir, s)),
        });
    }
    checkpoint::write(
        &config.output.dir,
        &CheckpointState {
            step: at.step,
            optimizer_steps,
            config_sha256: at.config_sha.to_string(),
            data_sha256: Some(prepared.data_sha256.clone()),
            model_sha256: Some(prepared.model_sha256.clone()),
        },
        &parameters,
        &moments,
        config.checkpoint.keep,
    )
}

fn write_summary(run: &Path, config: &RunConfig, table: &str) -> Result<(), TrainError> {
    let text = format!(
        "# Run summary\n\nobjective `{}`, model `{}`, data `{}`{}\n\n{table}",
        config
            .objective
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("?"),
        config.model.path.display(),
        config.data.path.display(),
        config
            .data
            .user
            .as_ref()
            .map(|u| format!(", user `{u}`"))
            .unwrap_or_default()
    );
    let path = run.join(SUMMARY_FILE);
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))
}

/// Exports the trained policy: a PEFT adapter (LoRA) or a transformers checkpoint.
fn export(
    config: &RunConfig,
    policy: &CausalLm,
    loaded: &bapo_model::LoadedModel,
    dir: &Path,
) -> Result<String, TrainError> {
    if dir.exists() {
        return Err(TrainError::ExportExists(dir.to_path_buf()));
    }
    // Written beside its place and renamed when complete: a killed or failed export leaves no
    // half-written folder where a complete one is expected.
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| TrainError::io(&partial, e))?;
    }
    let written = write_export(config, policy, loaded, &partial);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    let what = written?;
    std::fs::rename(&partial, dir).map_err(|e| TrainError::io(dir, e))?;
    Ok(format!("{what}: {}", dir.display()))
}

/// `bapo export --run`: the newest checkpoint of `config`'s run (or the checkpoint folder
/// `checkpoint_dir`) exported into `out`, as the run's end phase exports: a PEFT adapter (LoRA)
/// or a transformers checkpoint. The model must be the one the checkpoint was trained from.
pub fn export_run(
    config: &RunConfig,
    checkpoint_dir: Option<&Path>,
    out: &Path,
) -> Result<String, TrainError> {
    let ck = chosen_checkpoint(config, checkpoint_dir)?;
    if let Some(recorded) = &ck.state.model_sha256
        && *recorded != bapo_anchors::model_sha256(&config.model.path)?
    {
        return Err(TrainError::ModelChanged {
            path: config.model.path.clone(),
            checkpoint: ck.dir,
        });
    }
    let t = &config.training;
    // Trainable parameters exist on the autodiff device only, as in training.
    let device = t.backend.device(t.device_index)?.autodiff();
    let loaded = bapo_model::LoadedModel::open(&config.model.path, &device)?;
    let policy = ck.load_parameters(build_policy(config, &loaded.model, &device)?)?;
    export(config, &policy, &loaded, out)
}

/// The checkpoint folder `checkpoint_dir`, or else the newest of `config`'s run.
fn chosen_checkpoint(
    config: &RunConfig,
    checkpoint_dir: Option<&Path>,
) -> Result<checkpoint::Checkpoint, TrainError> {
    match checkpoint_dir {
        Some(dir) => checkpoint::read(dir),
        None => checkpoint::latest(&config.output.dir)?.ok_or_else(|| {
            TrainError::NoCheckpoint(checkpoint::checkpoints_dir(&config.output.dir))
        }),
    }
}

/// Writes the export into `dir`; returns what it is.
fn write_export(
    config: &RunConfig,
    policy: &CausalLm,
    loaded: &bapo_model::LoadedModel,
    dir: &Path,
) -> Result<&'static str, TrainError> {
    let policy = policy.valid();
    if config.lora.enabled {
        let CausalLm::Llama(model) = &policy else {
            return Err(TrainError::AdapterNeedsLlama);
        };
        export_peft_adapter(model, &config.model.path.display().to_string(), dir)?;
        return Ok("PEFT adapter");
    }
    policy.export_hf(&loaded.config, dir)?;
    bapo_model::export_tokenizer(loaded, dir)?;
    Ok("transformers checkpoint")
}

/// The evaluation of the model before training: reused from the anchor cache's folder when a
/// run of the same model, device and evaluation sets stored it (eval_cache.rs says why that is
/// exact), else `compute`d and stored; `force` (`--force-anchors`) recomputes it.
fn evaluation_before_training(
    config: &RunConfig,
    prepared: &Prepared,
    (force, progress): (bool, &Progress),
    compute: impl FnOnce() -> Result<Evaluation, TrainError>,
) -> Result<Evaluation, TrainError> {
    let Some(key) = StartKey::new(
        config,
        &prepared.model_sha256,
        &prepared.eval,
        prepared.model.pad_token,
    ) else {
        progress.line(
            "the bapo executable cannot be read: the evaluation before training is not stored",
        );
        return compute();
    };
    let path = key.path(&config.anchors.cache_dir);
    if force && path.exists() {
        std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
    }
    let (evaluation, stored) = start_evaluation(&key, &path, &prepared.eval.labels, compute)?;
    match stored {
        Stored::Reused => progress.line(format!(
            "evaluation before training: reused {}",
            path.display()
        )),
        Stored::Written => {}
        Stored::NotWritten(why) => progress.line(format!(
            "the evaluation before training is not stored ({why})"
        )),
    }
    Ok(evaluation)
}

/// `bapo eval`: the evaluation suite on the newest checkpoint of `config`'s run (or the
/// checkpoint folder `checkpoint`), next to the model before training. With `write`, the
/// checkpoint's evaluation also goes into the run's logs at its step (`eval.jsonl`,
/// `eval_items.jsonl`, TensorBoard), with the run locked as a training run locks it.
pub fn evaluate_run(
    config: &RunConfig,
    checkpoint_dir: Option<&Path>,
    quiet: bool,
    write: bool,
) -> Result<String, TrainError> {
    let progress = Progress { quiet };
    // The run's logs are written into, not made: a missing run is not created (issue #26).
    let run_config = config.output.dir.join(CONFIG_FILE);
    if write && !run_config.exists() {
        return Err(TrainError::NoRunToWrite(config.output.dir.clone()));
    }
    // Taken first: a run being trained is not evaluated into.
    let _lock = write
        .then(|| rundir::RunLock::acquire(&config.output.dir))
        .transpose()?;
    let prepared = prepare(config, false, &progress)?;
    let ck = chosen_checkpoint(config, checkpoint_dir)?;
    if write {
        // Its evaluation goes into this run's logs at its step: another run's checkpoint
        // would replace this run's row with a stranger's (issue #26).
        check_checkpoint_of_this_run(config, &ck, &prepared)?;
    }
    let policy = ck.load_parameters(build_policy(
        config,
        &prepared.model.model,
        &prepared.train_device,
    )?)?;
    let pad = prepared.model.pad_token;
    let eval = |m: &CausalLm| {
        evaluate(
            m,
            &prepared.reference,
            &prepared.eval,
            config.eval_limits(),
            pad,
            &prepared.device,
        )
    };
    let start = evaluation_before_training(config, &prepared, (false, &progress), || {
        progress.line("evaluating the reference");
        eval(&prepared.reference)
    })?;
    progress.line(format!("evaluating {}", ck.dir.display()));
    let end = eval(&policy.valid())?;
    let mut report = format!(
        "checkpoint {} (step {})\n\n{}",
        ck.dir.display(),
        ck.state.step,
        comparison_table(&start.metrics, &end.metrics, config.data.user.as_deref())
    );
    if write {
        write_item_labels(&config.output.dir, &prepared.eval.labels)?;
        put_evaluation(
            &config.output.dir,
            ck.state.step,
            &end,
            config.output.tensorboard,
        )?;
        report.push_str(&format!(
            "\nwritten into {} at step {}",
            config.output.dir.join(EVAL_FILE).display(),
            ck.state.step
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::step_counts;
    use crate::config::TrainingSection;

    #[test]
    fn step_counts_refuse_what_overflows_and_name_the_key() {
        let mut t = TrainingSection {
            batch_size: 4,
            epochs: 2,
            ..TrainingSection::default()
        };
        assert_eq!(step_counts(&t, 64).unwrap(), (4, 32));
        // A step past the data names the key that makes it so.
        let e = step_counts(&t, 3).unwrap_err().to_string();
        assert!(
            e.contains("`training.batch_size` = 4") && e.contains("3 training examples"),
            "{e}"
        );
        t.gradient_accumulation_steps = 1_000_000_000;
        let e = step_counts(&t, 64).unwrap_err().to_string();
        assert!(
            e.contains("`training.gradient_accumulation_steps` = 1000000000"),
            "{e}"
        );
        t.gradient_accumulation_steps = 16;
        assert_eq!(step_counts(&t, 64).unwrap(), (64, 2));
        t.gradient_accumulation_steps = 1;
        t.epochs = 1_537_228_672_809_129_302;
        let e = step_counts(&t, 64).unwrap_err().to_string();
        assert!(e.contains("`training.epochs` = 1537228672809129302"), "{e}");
        t.epochs = 2;
        t.max_steps = Some(usize::MAX / 2);
        let e = step_counts(&t, 64).unwrap_err().to_string();
        assert!(e.contains("training.max_steps"), "{e}");
    }
}
