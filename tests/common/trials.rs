//! Tests that drive software from outside the project (Chromium, Python's
//! `websockets`, `redis-server`): skipped with a reason when it is missing,
//! failed under CI.

use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Trial};

/// Software that some tests drive but this project does not build (Chromium,
/// Python's `websockets`), and whether it is usable on this machine.
#[derive(Clone, Debug)]
pub struct Component {
    /// What it is, as messages name it: `chromium`.
    pub name: &'static str,
    /// The command that installs it (`.ci/run` runs it).
    pub install: &'static str,
    /// Why it cannot be used here, or `None` when it can.
    pub missing: Option<String>,
}

/// An async test that needs `component`, as a trial for [`run_trials`]. It
/// runs on a current-thread runtime of its own, as `#[tokio::test]` would.
///
/// Without the component the test cannot check anything, so it does not
/// claim `ok`: `cargo test` shows it as `ignored (reason)` and counts it
/// among the ignored. With `CI` set it fails instead: CI must not pass by not
/// running it.
pub fn trial_needing<F, Fut>(component: &Component, name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let component = component.clone();
    Trial::ignorable_test(name, move || {
        if let Some(why) = component.missing {
            let Component { name, install, .. } = component;
            let why = format!("{name} missing: {why}; install it with `{install}`");
            if std::env::var_os("CI").is_some() {
                return Err(format!("{why}. CI must run this test (.ci/run installs it)").into());
            }
            return Ok(Completion::ignored_with(why));
        }
        block_on_own_runtime(test());
        Ok(Completion::Completed)
    })
}

/// An async test that needs nothing from outside the project, as a trial
/// for [`run_trials`], run as [`trial_needing`] runs one.
pub fn trial<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::test(name, move || {
        block_on_own_runtime(test());
        Ok(())
    })
}

/// Runs `test` on a current-thread runtime of its own, as `#[tokio::test]`
/// would.
fn block_on_own_runtime(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(test);
}

/// The `main` of a test file with `harness = false` in Cargo.toml: runs
/// `trials` with the arguments `cargo test` passes (name filters, `--list`,
/// `--test-threads`, ...). Unlike the built-in harness, libtest-mimic does not
/// capture output: a failing test's panic message is printed as it happens.
///
/// `source` is the file's own text. Without the built-in harness, a
/// `#[test]` or `#[tokio::test]` function would be compiled out and never
/// run, silently; such a function fails the run here instead.
pub fn run_trials(source: &str, trials: Vec<Trial>) -> ExitCode {
    let attributes = ["#[test]", "#[tokio::test"];
    if let Some(line) = source.lines().find(|l| attributes.iter().any(|a| l.trim().starts_with(a)))
    {
        eprintln!("`{}` does nothing in a harness = false test: add a Trial in main", line.trim());
        return ExitCode::FAILURE;
    }
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// Why axum_chat (chapter 12) cannot run in this test build, or `None`
/// when it can: it is built only with `--features axum`. For a test that
/// also needs a [`Component`]; a test that needs nothing else says so with
/// `#[cfg_attr(not(feature = "axum"), ignore = "...")]`.
pub fn axum_chat_missing() -> Option<String> {
    (!cfg!(feature = "axum")).then(|| "built only with `--features axum`".to_string())
}
