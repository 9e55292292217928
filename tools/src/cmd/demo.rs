//! `rollcall demo`: a server and a few endpoints on loopback, rings formed, a question answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use rollcall::compose::Answering;
use rollcall::config::Config;
use rollcall_actors::action::journal::MemJournal;
use rollcall_actors::action::sim::SimExecutor;
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_actors::sensors::sim::{HostProfile, SimulatedHost};
use rollcall_runtime::enrol::{self};
use rollcall_runtime::identity::{self, Ca, OperatorRole, PeerRole, Validity};
use rollcall_runtime::node::{Node, NodeOptions};
use rollcall_runtime::signing::ServerSigner;
use rollcall_runtime::transport::quic::{QuicOptions, QuicTransport};

use super::args::*;
use super::nodes::*;
use super::questions::*;
use super::rings::*;
use rollcall::desk_client::*;

pub(crate) async fn demo(a: DemoArgs) -> Result<std::process::ExitCode> {
    let dir = tempfile::tempdir().context("making a scratch directory")?;
    let ca = Arc::new(Ca::init(&dir.path().join("ca"), "rollcall demo CA")?);
    let signer = Arc::new(ServerSigner::load_or_create(&dir.path().join("ca"))?);
    let token = ca.new_join_token()?;
    // Fast timings so the demo settles in a second or two.
    let mut cfg = Config::default();
    cfg.ring.register_min_ms = 300;
    cfg.ring.register_max_ms = 600;
    cfg.ring.probe_interval_ms = 100;
    cfg.ring.hop_timeout_ms = 250;
    let (server, _rings) = start_server(
        ca.clone(),
        Some(&dir.path().join("ca")),
        signer,
        &dir.path().join("server"),
        "127.0.0.1:0".parse()?,
        &cfg,
    )
    .await?;
    let server_addr = server.local_addr();
    let subnets = a.subnets.min(a.endpoints);
    if !a.json {
        println!(
            "rollcall demo: server {} on {server_addr}; {} endpoints in {subnets} subnets (127.0.1.x …)",
            server.identity().id,
            a.endpoints
        );
    }

    // Enrol every endpoint over QUIC with the join token, as `rollcall endpoint` does.
    let t0 = Instant::now();
    let mut enrolled = Vec::new();
    for i in 0..a.endpoints {
        let subnet = (i % subnets) as u8 + 1;
        let host = (i / subnets) as u8 + 1;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, subnet, host));
        let state = dir.path().join(format!("endpoint-{i}"));
        let e = enrol::load_or_enrol(
            &state,
            server_addr,
            Some(&token),
            &format!("demo-{subnet}-{host}"),
            SocketAddr::new(ip, 0),
        )
        .await
        .with_context(|| format!("enrolling endpoint {i}"))?;
        enrolled.push((ip, state, e));
    }
    let enrol_ms = t0.elapsed().as_millis();

    // Start them; they register, find their ring and link up.
    let t1 = Instant::now();
    let mut endpoints = Vec::new();
    for (ip, state, e) in enrolled {
        let secret = identity::load_or_create_secret(&state)?;
        let t = QuicTransport::bind(
            SocketAddr::new(ip, 0),
            &e.creds,
            &secret,
            QuicOptions::default(),
        )?;
        let node = Node::start(t, NodeOptions::default()).await?;
        let seed = match ip {
            IpAddr::V4(v) => u64::from(v.octets()[2]) * 1000 + u64::from(v.octets()[3]),
            IpAddr::V6(_) => 0,
        };
        let profile = HostProfile::from_seed(seed, Some(ip));
        start_member(
            &node,
            server_addr,
            Arc::new(e.trust),
            &cfg,
            profile.hostname.clone(),
            {
                let host = Arc::new(SimulatedHost::new(profile));
                Answering::Acting {
                    host: host.clone(),
                    journal: Arc::new(MemJournal::default()),
                    executor: Arc::new(SimExecutor::new(host)),
                    files: None,
                    history: None,
                }
            },
        )
        .await?;
        endpoints.push(node);
    }

    // Watch, as an admin operator would, until every ring is one chain with two leaders.
    let admin = ca.issue(
        PeerRole::Operator(OperatorRole::Admin),
        Some("demo-admin"),
        Validity::default(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let r = fetch_rings(&admin, server_addr, None, None).await?;
        let members: usize = r.rings.iter().map(|x| x.members.len()).sum();
        let settled = r.rings.len() == usize::from(subnets)
            && members == usize::from(a.endpoints)
            && r.rings.iter().all(|x| {
                x.members
                    .iter()
                    .all(|m| m.health == rollcall_cluster::proto::Health::Ok)
                    && x.members.first().is_some_and(|m| m.leads.forward)
                    && x.members.last().is_some_and(|m| m.leads.backward)
                    && x.leader_links == x.members.len().min(2)
            });
        if settled || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ring_ms = t1.elapsed().as_millis();
    let members: usize = report.rings.iter().map(|x| x.members.len()).sum();
    if !a.json {
        println!(
            "enrolled {} endpoints in {enrol_ms} ms; rings formed in {ring_ms} ms\n",
            a.endpoints
        );
    }
    if !a.json {
        print_rings(&report, false)?;
    }
    if members != usize::from(a.endpoints) || report.rings.len() != usize::from(subnets) {
        bail!("only {members} of {} endpoints formed rings", a.endpoints);
    }

    // The main job: ask every machine a question, watch the answers merge along the rings.
    let desk = DeskClient::with_creds(&admin, server_addr).await?;
    let text = a.question.clone();
    let id = match desk
        .call(DeskRequest::Ask {
            text,
            ttl_ms: Some(60_000),
        })
        .await?
    {
        DeskReply::Asked { id, canonical, .. } => {
            if !a.json {
                println!("\nrollcall ask '{canonical}'");
            }
            id
        }
        DeskReply::Error(e) => bail!("{e}"),
        other => bail!("unexpected answer {other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let p = desk.progress(id).await?;
        if (p.fanned_out && p.answered >= p.expected) || Instant::now() >= deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let catalog = desk.catalog().await;
    desk.close().await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "rings": report, "answer": answer })
            )?
        );
    } else {
        print_progress(
            &answer,
            &OutputFlags {
                json: false,
                csv: false,
            },
            &catalog,
        )?;
    }
    // Endpoints first (their actors stop with them), then the server, so nothing is left
    // trying to register with a server that is gone.
    for node in &endpoints {
        node.shutdown();
    }
    for node in &endpoints {
        node.shutdown_and_wait(Duration::from_millis(500)).await;
    }
    server.shutdown_and_wait(Duration::from_millis(500)).await;
    if answer.answered != usize::from(a.endpoints) {
        bail!(
            "only {} of {} endpoints answered",
            answer.answered,
            a.endpoints
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
