//! What a fleet's operators and admins do through its desk: actions, their approval and
//! cancellation, packages with files, and the link rates their distribution runs over.

use anyhow::{Result, bail};
use rollcall_actors::action::server::{ActRequest, ActionReport};
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_patchdist::Manifest;

use super::{Fleet, fleet_admin, fleet_operator};

impl Fleet {
    /// Issues an action through the desk, as an operator; returns its id.
    pub async fn act(&self, req: ActRequest) -> Result<u64> {
        match self
            .desk
            .serve(DeskRequest::Act(req), &fleet_operator())
            .await
        {
            DeskReply::Action(r) => Ok(r.id),
            other => bail!("act failed: {other:?}"),
        }
    }

    /// Adds package `name`, which runs `command` with `files`, as an admin would with
    /// `rollcall package add --file`: the files are cut into chunks, each chunk is handed
    /// to the server (which hashes it), and then the manifest. Returns the manifest.
    pub async fn add_package(
        &self,
        name: &str,
        files: &[(String, bytes::Bytes)],
        command: &str,
    ) -> Result<Manifest> {
        let (m, chunks) = Manifest::build(files)?;
        let admin = fleet_admin();
        for c in chunks {
            let data = serde_bytes::ByteBuf::from(c.data().to_vec());
            match self
                .desk
                .serve(DeskRequest::PutChunk { data }, &admin)
                .await
            {
                DeskReply::Done(_) => {}
                other => bail!("uploading a chunk failed: {other:?}"),
            }
        }
        let req = DeskRequest::AddPackage {
            name: name.into(),
            command: command.into(),
            timeout_secs: 600,
            manifest: Some(m.clone()),
        };
        match self.desk.serve(req, &admin).await {
            DeskReply::Done(_) => {
                self.packages_added
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(m)
            }
            other => bail!("adding the package failed: {other:?}"),
        }
    }

    /// Packages added to this fleet so far.
    pub fn packages_added(&self) -> u64 {
        self.packages_added
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Link rates of the in-memory network, in megabits per second (see
    /// [`MemNetwork::set_bandwidth`]).
    pub fn set_bandwidth(&self, host_mbps: f64, server_mbps: f64) {
        self.net
            .set_bandwidth(host_mbps, self.server_addr.ip(), server_mbps);
    }

    /// What left the server for package `m`.
    pub fn egress(&self, m: &Manifest) -> rollcall_patchdist::Egress {
        self.origin.egress(&m.id())
    }

    /// Approves action `id` as an admin other than the fleet's operator.
    pub async fn approve(&self, id: u64) -> Result<()> {
        match self
            .desk
            .serve(DeskRequest::Approve { id }, &fleet_admin())
            .await
        {
            DeskReply::Done(_) => Ok(()),
            other => bail!("approve failed: {other:?}"),
        }
    }

    /// Cancels action `id` as the fleet's operator (who issued it).
    pub async fn cancel(&self, id: u64) -> Result<String> {
        match self
            .desk
            .serve(DeskRequest::Cancel { id }, &fleet_operator())
            .await
        {
            DeskReply::Done(s) => Ok(s),
            other => bail!("cancel failed: {other:?}"),
        }
    }

    /// Where action `id` stands.
    pub fn action(&self, id: u64) -> Option<ActionReport> {
        self.desk.actions().report(id, false)
    }

    /// Where package `name` stands, as `package status` shows it.
    pub async fn package_status(
        &self,
        name: &str,
    ) -> std::result::Result<rollcall_actors::action::server::PackageReport, String> {
        self.desk.package_status(name).await
    }
}
