//! `rollcall ca`: the cluster CA, join tokens and operator certificates.

use anyhow::{Context, Result, bail};

use rollcall_runtime::identity::{Ca, PeerRole, Validity};

use super::args::*;

pub(crate) fn ca(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let ca = Ca::init(&dir, &name).context("creating the CA")?;
            // The server's signing key and answer secret are made with the CA (a server
            // would make them on first start otherwise): endpoints pin the key at enrolment.
            let signer = rollcall_runtime::signing::ServerSigner::load_or_create(&dir)
                .context("making the server's signing key")?;
            let token = ca.new_join_token()?;
            println!(
                "created CA in {} (fingerprint {})",
                dir.display(),
                ca.fingerprint()
            );
            println!("signing key: {}", signer.public_key());
            println!("join token: {token}");
        }
        CaCommand::JoinToken { dir, uses, expires } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let policy = rollcall_runtime::identity::TokenPolicy {
                expires_unix_secs: expires.map(|d| now.saturating_add(d.as_secs())),
                uses_left: uses,
            };
            println!("{}", ca.new_join_token_with(policy)?);
        }
        CaCommand::Tokens { dir } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            println!("{:<10} {:<22} USES LEFT", "ID", "EXPIRES");
            for t in ca.join_tokens() {
                let expires = match t.policy.expires_unix_secs {
                    None => "never".to_string(),
                    Some(e) if e <= now => "expired".to_string(),
                    Some(e) => format!("in {} min", (e - now).div_ceil(60)),
                };
                let uses = t
                    .policy
                    .uses_left
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "any".into());
                println!("{:<10} {:<22} {uses}", t.id, expires);
            }
        }
        CaCommand::RevokeToken { dir, id } => {
            let ca = Ca::load(&dir).context("loading the CA")?;
            if !ca.revoke_join_token(&id)? {
                bail!("no join token {id:?} (give the 8-character id `rollcall ca tokens` shows)");
            }
            println!("revoked join token {id}");
        }
        CaCommand::Revoke { dir, id } => {
            Ca::load(&dir).context("loading the CA")?;
            if rollcall_runtime::revocation::revoke(&dir, &id)? {
                println!("revoked {id}");
            } else {
                println!("{id} was revoked already");
            }
        }
        CaCommand::Revoked { dir } => {
            Ca::load(&dir).context("loading the CA")?;
            for id in rollcall_runtime::revocation::load(&dir)? {
                println!("{id}");
            }
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
            // Pinned to the server whose state sits beside the CA (its default place), so
            // the CLI talks to no other server of this CA.
            let server_state = dir.join("server");
            if rollcall_runtime::identity::Credentials::exist_in(&server_state) {
                let server = rollcall_runtime::identity::Credentials::load(&server_state)?;
                std::fs::write(
                    out.join(rollcall::desk_client::SERVER_PIN_FILE),
                    server.identity.id.as_str(),
                )
                .context("writing the server pin")?;
                println!("pinned to server {}", server.identity.id);
            }
            println!(
                "issued {} certificate for {name} in {}",
                PeerRole::Operator(role),
                out.display()
            );
        }
    }
    Ok(())
}
