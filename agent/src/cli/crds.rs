//! `kubekuma crds`: print the CustomResourceDefinitions of all kinds as YAML.

use std::process::ExitCode;

/// `kubekuma crds`.
pub(super) fn crds() -> ExitCode {
    print!("{}", kubekuma_crds::crdgen::all_crds_yaml());
    ExitCode::SUCCESS
}
