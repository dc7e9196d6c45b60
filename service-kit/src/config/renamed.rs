//! Variables renamed when the configuration names were made consistent
//! (`docs/operations.md`, "Naming"). Their old names are still read for one release: an
//! old variable set without its new one becomes the new one's command-line argument, in
//! the old unit, and the service warns at start-up. Arguments rather than
//! `std::env::set_var`, which is unsound once other threads run (and `#[tokio::main]` has
//! started them before `main`'s body).

use std::ffi::{OsStr, OsString};

/// How an old variable's value reads under its new name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldUnit {
    /// The value is the same (a size, a count).
    Same,
    /// A bare number of milliseconds, now written `<n>ms`.
    Millis,
    /// A bare number of seconds, now written `<n>s`.
    Secs,
}

/// A variable known by another name in the previous release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renamed {
    /// The name the previous release read.
    pub old: &'static str,
    /// The name read now.
    pub new: &'static str,
    /// What the old value was counted in.
    pub unit: OldUnit,
}

const fn renamed(old: &'static str, new: &'static str, unit: OldUnit) -> Renamed {
    Renamed { old, new, unit }
}

/// Every rename, for every service: each applies only to a service that has the new
/// variable. Remove this table (and the old names from the docs) in the next release.
pub const RENAMED: &[Renamed] = &[
    renamed("SHUTDOWN_TIMEOUT_SECS", "SHUTDOWN_TIMEOUT", OldUnit::Secs),
    renamed(
        "HTTP_HEADER_TIMEOUT_SECS",
        "HTTP_HEADER_TIMEOUT",
        OldUnit::Secs,
    ),
    renamed("HTTP_BODY_TIMEOUT_SECS", "HTTP_BODY_TIMEOUT", OldUnit::Secs),
    renamed(
        "HTTP_REQUEST_TIMEOUT_SECS",
        "HTTP_REQUEST_TIMEOUT",
        OldUnit::Secs,
    ),
    renamed("HTTP_IDLE_TIMEOUT_SECS", "HTTP_IDLE_TIMEOUT", OldUnit::Secs),
    renamed("MAX_BODY_BYTES", "HTTP_MAX_BODY_BYTES", OldUnit::Same),
    renamed(
        "PUBLISH_TIMEOUT_MS",
        "NATS_PUBLISH_TIMEOUT",
        OldUnit::Millis,
    ),
    renamed("NATS_ACK_WAIT_SECS", "NATS_ACK_WAIT", OldUnit::Secs),
    renamed(
        "NATS_DUPLICATE_WINDOW_SECS",
        "NATS_DUPLICATE_WINDOW",
        OldUnit::Secs,
    ),
    renamed(
        "STATEMENT_TIMEOUT_MS",
        "DB_STATEMENT_TIMEOUT",
        OldUnit::Millis,
    ),
    renamed("NATS_BATCH_SIZE", "WORKER_BATCH_SIZE", OldUnit::Same),
    renamed("BATCH_LINGER_MS", "WORKER_BATCH_LINGER", OldUnit::Millis),
    renamed(
        "COMPACT_INTERVAL_MS",
        "WORKER_COMPACT_INTERVAL",
        OldUnit::Millis,
    ),
];

/// An old variable found at start-up, to be logged once logging is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deprecated {
    /// Only the old name was set: its value was used, as `new=written`.
    Used {
        /// The old name.
        old: &'static str,
        /// The new name.
        new: &'static str,
        /// The value as it is written under the new name.
        written: String,
    },
    /// Both names were set: the new one was used and the old one ignored.
    Ignored {
        /// The old name.
        old: &'static str,
        /// The new name.
        new: &'static str,
    },
}

impl Deprecated {
    /// The warning, one line naming both variables.
    pub fn message(&self) -> String {
        match self {
            Deprecated::Used { old, new, written } => format!(
                "{old} is deprecated and will not be read after this release: set {new}={written} instead"
            ),
            Deprecated::Ignored { old, new } => {
                format!("{old} is deprecated and ignored because {new} is set: remove {old}")
            }
        }
    }
}

/// The old variables found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "log the deprecations once logging is set up"]
pub struct Deprecations(pub Vec<Deprecated>);

impl Deprecations {
    /// Logs one warning per old variable (call once, after the subscriber is installed).
    pub fn log(&self) {
        for deprecated in &self.0 {
            let (Deprecated::Used { old, new, .. } | Deprecated::Ignored { old, new }) = deprecated;
            tracing::warn!(
                old_variable = old,
                new_variable = new,
                "{}",
                deprecated.message()
            );
        }
    }
}

/// An old variable whose value cannot be carried over.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid configuration: {old}={value:?} is not valid: {source}; {old} is deprecated: set {new} instead, with a unit (docs/operations.md)"
)]
pub struct NotANumber {
    /// The old name.
    pub old: &'static str,
    /// The new name.
    pub new: &'static str,
    /// The value, as set.
    pub value: String,
    /// Why it is not a whole number.
    #[source]
    pub source: std::num::ParseIntError,
}

/// Arguments for `command` equivalent to the old variables `env` holds, and what to log
/// about them. `env` reads a variable (`None` when unset or empty). A rename whose new
/// variable `command` does not have is skipped: it belongs to another service.
pub fn legacy_args(
    command: &clap::Command,
    renames: &[Renamed],
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<(Vec<OsString>, Deprecations), NotANumber> {
    let mut args = Vec::new();
    let mut deprecations = Vec::new();
    for rename in renames {
        let Some(long) = long_of(command, rename.new) else {
            continue;
        };
        let Some(value) = env(rename.old) else {
            continue;
        };
        if env(rename.new).is_some() {
            deprecations.push(Deprecated::Ignored {
                old: rename.old,
                new: rename.new,
            });
            continue;
        }
        let written = written(rename, &value)?;
        let mut arg = OsString::from(format!("--{long}="));
        arg.push(&written);
        args.push(arg);
        deprecations.push(Deprecated::Used {
            old: rename.old,
            new: rename.new,
            written: written.to_string_lossy().into_owned(),
        });
    }
    Ok((args, Deprecations(deprecations)))
}

/// The long option of the argument read from `variable`.
fn long_of<'a>(command: &'a clap::Command, variable: &str) -> Option<&'a str> {
    command
        .get_arguments()
        .find(|arg| arg.get_env() == Some(OsStr::new(variable)))
        .and_then(clap::Arg::get_long)
}

/// The old value as the new variable writes it.
fn written(rename: &Renamed, value: &OsStr) -> Result<OsString, NotANumber> {
    let suffix = match rename.unit {
        OldUnit::Same => return Ok(value.to_owned()),
        OldUnit::Millis => "ms",
        OldUnit::Secs => "s",
    };
    let text = value.to_string_lossy();
    text.trim()
        .parse::<u64>()
        .map(|n| OsString::from(format!("{n}{suffix}")))
        .map_err(|source| NotANumber {
            old: rename.old,
            new: rename.new,
            value: text.into_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::time::Duration;

    #[derive(Debug, Parser)]
    #[command(args_override_self = true)]
    struct Sample {
        #[arg(long, env = "SAMPLE_RENAMED_TIMEOUT", default_value = "30s",
              value_parser = crate::config::positive_duration)]
        timeout: Duration,
        #[arg(long, env = "SAMPLE_RENAMED_SIZE", default_value_t = 1)]
        size: usize,
    }

    const SAMPLE: &[Renamed] = &[
        renamed(
            "SAMPLE_OLD_TIMEOUT_MS",
            "SAMPLE_RENAMED_TIMEOUT",
            OldUnit::Millis,
        ),
        renamed("SAMPLE_OLD_SIZE", "SAMPLE_RENAMED_SIZE", OldUnit::Same),
        renamed("SAMPLE_OLD_ELSEWHERE_SECS", "NOT_IN_SAMPLE", OldUnit::Secs),
    ];

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// Parses `Sample` as a service would: the legacy arguments first, then `argv`.
    fn parse(
        vars: &[(&str, &str)],
        argv: &[&str],
    ) -> Result<(Sample, Deprecations), Box<dyn std::error::Error>> {
        let (args, deprecations) = legacy_args(&Sample::command(), SAMPLE, env(vars))?;
        let argv = std::iter::once(OsString::from("sample"))
            .chain(args)
            .chain(argv.iter().map(OsString::from));
        Ok((Sample::try_parse_from(argv)?, deprecations))
    }

    #[test]
    fn an_old_variable_alone_is_read_in_its_old_unit_and_warned_about()
    -> Result<(), Box<dyn std::error::Error>> {
        let (sample, deprecations) = parse(
            &[("SAMPLE_OLD_TIMEOUT_MS", "250"), ("SAMPLE_OLD_SIZE", "7")],
            &[],
        )?;
        assert_eq!(sample.timeout, Duration::from_millis(250));
        assert_eq!(sample.size, 7);
        let messages: Vec<String> = deprecations.0.iter().map(Deprecated::message).collect();
        assert_eq!(
            messages,
            [
                "SAMPLE_OLD_TIMEOUT_MS is deprecated and will not be read after this release: \
                 set SAMPLE_RENAMED_TIMEOUT=250ms instead",
                "SAMPLE_OLD_SIZE is deprecated and will not be read after this release: \
                 set SAMPLE_RENAMED_SIZE=7 instead",
            ]
        );
        Ok(())
    }

    #[test]
    fn with_both_names_set_the_new_one_wins_and_the_old_is_said_to_be_ignored()
    -> Result<(), Box<dyn std::error::Error>> {
        let (args, deprecations) = legacy_args(
            &Sample::command(),
            SAMPLE,
            env(&[
                ("SAMPLE_OLD_TIMEOUT_MS", "250"),
                ("SAMPLE_RENAMED_TIMEOUT", "2s"),
            ]),
        )?;
        assert!(args.is_empty(), "{args:?}");
        assert_eq!(
            deprecations.0,
            [Deprecated::Ignored {
                old: "SAMPLE_OLD_TIMEOUT_MS",
                new: "SAMPLE_RENAMED_TIMEOUT"
            }]
        );
        assert_eq!(
            deprecations.0[0].message(),
            "SAMPLE_OLD_TIMEOUT_MS is deprecated and ignored because SAMPLE_RENAMED_TIMEOUT \
             is set: remove SAMPLE_OLD_TIMEOUT_MS"
        );
        Ok(())
    }

    #[test]
    fn an_argument_on_the_command_line_still_wins() -> Result<(), Box<dyn std::error::Error>> {
        let (sample, _) = parse(&[("SAMPLE_OLD_SIZE", "7")], &["--size", "9"])?;
        assert_eq!(sample.size, 9);
        Ok(())
    }

    #[test]
    fn nothing_happens_without_old_variables_or_for_another_services_variable()
    -> Result<(), Box<dyn std::error::Error>> {
        let (args, deprecations) = legacy_args(
            &Sample::command(),
            SAMPLE,
            env(&[("SAMPLE_OLD_ELSEWHERE_SECS", "5")]),
        )?;
        assert!(args.is_empty() && deprecations.0.is_empty());
        let (sample, _) = parse(&[], &[])?;
        assert_eq!(sample.timeout, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn an_old_duration_that_is_not_a_number_names_the_old_variable() {
        let error = legacy_args(
            &Sample::command(),
            SAMPLE,
            env(&[("SAMPLE_OLD_TIMEOUT_MS", "5s")]),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            error.starts_with("invalid configuration: SAMPLE_OLD_TIMEOUT_MS=\"5s\" is not valid")
                && error.contains("set SAMPLE_RENAMED_TIMEOUT instead"),
            "{error}"
        );
    }

    #[test]
    fn every_rename_is_to_a_new_name_without_a_unit_suffix() {
        for rename in RENAMED {
            assert_ne!(rename.old, rename.new);
            for suffix in ["_MS", "_SECS"] {
                assert!(!rename.new.ends_with(suffix), "{}", rename.new);
            }
            let counted = rename.unit != OldUnit::Same;
            assert_eq!(
                counted,
                rename.old.ends_with("_MS") || rename.old.ends_with("_SECS"),
                "{rename:?}"
            );
        }
    }
}
