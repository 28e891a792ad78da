//! `cauce nats`: the operator's one step that creates or changes cauce's streams,
//! consumers and buckets. `cauce up` runs the same step at start; every other command
//! only checks what it needs and never changes it. `cauce nats permissions` prints the
//! server's users, one per kind of process.

use cauce_nats::async_nats::jetstream;
use cauce_nats::connect;
use clap::{Args, Subcommand};

use crate::cli::{LimitsArgs, NatsArgs};

#[derive(Debug, Args)]
pub struct NatsCommand {
    #[command(subcommand)]
    action: NatsAction,
}

#[derive(Debug, Subcommand)]
enum NatsAction {
    /// Create what is missing and set the limits given; limits not given keep the
    /// server's value (the default for an object that does not exist yet)
    Apply {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        limits: LimitsArgs,
    },
    /// Print the limits the server holds
    Show {
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print nats-server's `authorization` block: one user per kind of process, each
    /// allowed only what its code uses (ops/nats/permissions.conf is its output)
    Permissions,
}

pub async fn run(command: NatsCommand) -> anyhow::Result<()> {
    match command.action {
        NatsAction::Apply { nats, limits } => {
            let client = connect(
                &nats
                    .connect_options(cauce_nats::permissions::Role::Operator, "cauce-nats-apply")?,
            )
            .await?;
            let js = jetstream::new(client.clone());
            let before = cauce_nats::read(&js).await?;
            let after = limits.apply(&js).await?;
            println!("{}", crate::cli::describe_limits(&after));
            if before == after {
                println!("(no limit changed)");
            }
            client.drain().await.ok();
        }
        NatsAction::Show { nats } => {
            let client = connect(
                &nats
                    .connect_options(cauce_nats::permissions::Role::Operator, "cauce-nats-show")?,
            )
            .await?;
            let limits = cauce_nats::read(&jetstream::new(client.clone())).await?;
            println!("{}", crate::cli::describe_limits(&limits));
            client.drain().await.ok();
        }
        NatsAction::Permissions => print!("{}", cauce_nats::permissions::server_config()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The committed server config is the one the code generates: run
    /// `cauce nats permissions > ops/nats/permissions.conf` after changing a name.
    #[test]
    fn the_shipped_permissions_are_generated_from_the_names() {
        let shipped = include_str!("../nats/permissions.conf");
        assert!(
            shipped == cauce_nats::permissions::server_config(),
            "ops/nats/permissions.conf is stale: run \
             `cauce nats permissions > ops/nats/permissions.conf`"
        );
    }
}
