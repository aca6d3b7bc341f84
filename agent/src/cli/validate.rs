//! `kubekuma validate`: check manifests exactly as the agent reads them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::catalog::folder::{check_paths, read_paths};
use crate::catalog::snapshot::{Built, build};
use crate::findings::Severity;

use super::{plural, print_findings};

/// One line about what the manifests held: documents, files, valid resources and
/// monitors, errors and warnings (also printed by `up`).
pub(super) fn summary(built: &Built, files: usize, docs: usize) -> String {
    let errors = built
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = built.findings.len() - errors;
    format!(
        "{} in {}: {} valid ({}), {}, {}",
        plural(docs, "document"),
        plural(files, "file"),
        plural(built.snapshot.len(), "resource"),
        plural(built.snapshot.monitors.len(), "monitor"),
        plural(errors, "error"),
        plural(warnings, "warning"),
    )
}

/// `kubekuma validate`: the findings and the summary on stdout; failure on an error (or,
/// with `--strict`, on any finding).
pub(super) fn validate(paths: &[PathBuf], strict: bool) -> ExitCode {
    if let Err(e) = check_paths(paths) {
        eprintln!("kubekuma validate: {e}");
        return ExitCode::FAILURE;
    }
    let files = read_paths(paths);
    let docs: usize = files.iter().map(|f| f.docs.len()).sum();
    let built = build(&files, None);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print_findings(&mut out, &built.findings);
    let _ = writeln!(out, "{}", summary(&built, files.len(), docs));
    let errors = built.findings.iter().any(|f| f.severity == Severity::Error);
    if errors || (strict && !built.findings.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
