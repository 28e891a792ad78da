//! Handing `cauce up`'s settings to its children: every flag given on its command line
//! becomes the environment variable that the same flag reads (each flag has one), so a
//! child (`cauce gateway`, `cauce inference`, …) parses the very same value with the
//! very same code, and no flag changes meaning between `cauce up` and a component run
//! alone. Flags left out are not set: the children share `cauce up`'s defaults, which
//! come from the same structs, and inherit its environment.
//!
//! Values travel in the environment rather than on the command line, where `ps` would
//! show an API key to every user of the machine.

use std::ffi::OsString;

use std::collections::HashSet;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

/// `(variable, value)` for each flag of `command` that `matches` got on the command line.
pub fn given_as_env(command: &clap::Command, matches: &ArgMatches) -> Vec<(OsString, OsString)> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            if matches.value_source(id) != Some(ValueSource::CommandLine) {
                return None;
            }
            let variable = arg.get_env()?.to_os_string();
            let values: Vec<&std::ffi::OsStr> = matches.get_raw(id)?.collect();
            let mut joined = OsString::new();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    joined.push(",");
                }
                joined.push(value);
            }
            Some((variable, joined))
        })
        .collect()
}

/// The environment variables the flags of `command` read.
pub fn variables_of(command: &clap::Command) -> HashSet<OsString> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|variable| variable.to_os_string())
        .collect()
}

/// The command line of the component `cauce up` runs as `name`.
pub fn command_of(name: &'static str) -> clap::Command {
    let command = clap::Command::new(name);
    match name {
        "gateway" => crate::gateway::GatewayArgs::augment_args(command),
        "retrieval" => crate::retrieval::RetrievalArgs::augment_args(command),
        "inference" => crate::inference::InferenceArgs::augment_args(command),
        _ => crate::ingest::IngestArgs::augment_args(command),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use super::*;
    use crate::up::UpArgs;

    /// Flags of `command` with no environment variable: they could not reach a child.
    fn without_env(command: &clap::Command) -> Vec<String> {
        command
            .get_arguments()
            .filter(|arg| {
                arg.get_env().is_none() && !matches!(arg.get_id().as_str(), "help" | "version")
            })
            .map(|arg| arg.get_id().to_string())
            .collect()
    }

    fn up_command() -> Command {
        UpArgs::augment_args(Command::new("up"))
    }

    #[test]
    fn every_flag_of_up_can_reach_a_child() {
        assert_eq!(without_env(&up_command()), Vec::<String>::new());
    }

    #[test]
    fn flags_given_become_the_variables_the_children_read() {
        let matches = up_command()
            .try_get_matches_from([
                "up",
                "--port",
                "9000",
                "--slots=2",
                "--metrics-public",
                "--cache",
                "false",
                "--api-keys",
                "a,b",
            ])
            .unwrap();
        let env = given_as_env(&up_command(), &matches);
        let get = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("CAUCE_GATEWAY_PORT").as_deref(), Some("9000"));
        assert_eq!(get("CAUCE_SLOTS").as_deref(), Some("2"));
        assert_eq!(get("CAUCE_METRICS_PUBLIC").as_deref(), Some("true"));
        assert_eq!(get("CAUCE_CACHE").as_deref(), Some("false"));
        assert_eq!(get("CAUCE_API_KEYS").as_deref(), Some("a,b"));
        assert_eq!(get("CAUCE_CTX_SIZE"), None, "defaults are not forwarded");
        assert_eq!(env.len(), 5);
        UpArgs::from_arg_matches(&matches).unwrap();
        let api_keys = OsString::from("CAUCE_API_KEYS");
        assert!(variables_of(&command_of("gateway")).contains(&api_keys));
        for worker in ["retrieval", "inference", "ingest"] {
            assert!(
                !variables_of(&command_of(worker)).contains(&api_keys),
                "{worker}"
            );
        }
    }
}
