//! `rollcall ca`: the cluster CA, join tokens and operator certificates.

use anyhow::{Context, Result};

use rollcall_runtime::identity::{Ca, PeerRole, Validity};

use super::args::*;

pub(crate) fn ca(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let ca = Ca::init(&dir, &name).context("creating the CA")?;
            let token = ca.new_join_token()?;
            println!(
                "created CA in {} (fingerprint {})",
                dir.display(),
                ca.fingerprint()
            );
            println!("join token: {token}");
        }
        CaCommand::JoinToken { dir } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            println!("{}", ca.new_join_token()?);
        }
        CaCommand::IssueOperator {
            dir,
            name,
            role,
            out,
            days,
        } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            let validity = Validity {
                not_after_secs: days * 24 * 3600,
                ..Validity::default()
            };
            let creds = ca.issue(PeerRole::Operator(role), Some(&name), validity)?;
            creds.save(&out)?;
            println!(
                "issued {} certificate for {name} in {}",
                PeerRole::Operator(role),
                out.display()
            );
        }
    }
    Ok(())
}
