//! `rollcall`: the operator CLI and node launcher.
//!
//! One thin binary over the library crates: it parses flags, loads configuration and
//! credentials, starts nodes and prints results. Protocol logic lives in the libraries.

use anyhow::{Context, Result, bail};

mod bench;
mod bench_processes;
mod cmd;

use cmd::chaos::*;
use cmd::{actions::*, args::*, ca::*, demo::*, nodes::*, questions::*, rings::*};
use rollcall::desk_client::*;

// One process may run a server and 100,000 simulated endpoints, each a handful of actors
// passing small messages: mimalloc serves those many small, short-lived allocations faster
// than the system allocator, and fragments less. (Off without the `mimalloc` feature, so that
// heaptrack, which intercepts malloc, sees every allocation.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
#[cfg(feature = "simulation")]
use rollcall::sim;
use rollcall_actors::desk::DeskRequest;
use rollcall_actors::search::SavedQuestion;
use rollcall_actors::sensors::PatchLevel;
use rollcall_runtime::telemetry;

/// Set for a node process that runs without transparent huge pages (see [`small_pages`]).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
const ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// Server and endpoint processes run without transparent huge pages. The allocator asks
/// for them on its arena before `main` runs (the machine's THP mode is usually `madvise`),
/// and each first touch of a 2 MiB region then zeroes and maps all of it, compacting memory
/// first if it must. Measured with 100 agents on one machine: 8.3 MiB PSS each instead of
/// 3.3, and a restart of all 100 took 4.4 s instead of 0.8 s, most of it in the kernel.
/// The allocator's setting is read before `main`, so the process starts itself again, once,
/// with the setting in its environment (same PID, same arguments). The simulator and the
/// benchmarks keep huge pages: their heaps are gigabytes, where fewer TLB misses pay.
/// If the new start fails, the node runs on, with `prctl(PR_SET_THP_DISABLE)` for what is
/// mapped from then on.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn small_pages() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(ALLOW_THP).is_some() {
        return None;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    // Returns only if the exec failed.
    Some(
        std::process::Command::new("/proc/self/exe")
            .arg0(argv0)
            .args(args)
            .env(ALLOW_THP, "0")
            .exec(),
    )
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    let restart_failed = if matches!(cli.command, Command::Server(_) | Command::Endpoint(_)) {
        small_pages()
    } else {
        None
    };
    // Long-running nodes log their lifecycle; one-shot commands only warnings.
    let quiet = !matches!(cli.command, Command::Server(_) | Command::Endpoint(_));
    let format = match cli.log_format {
        cmd::args::LogFormatArg::Text => telemetry::LogFormat::Text,
        cmd::args::LogFormatArg::Json => telemetry::LogFormat::Json,
    };
    telemetry::init_as(if quiet { "warn" } else { "info" }, format);
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    if let Some(e) = restart_failed {
        tracing::debug!(error = %e, "could not start again without transparent huge pages");
    }
    // Also for what is mapped from here on, whatever the allocator (see `small_pages`).
    if matches!(cli.command, Command::Server(_) | Command::Endpoint(_))
        && let Err(e) = nix::sys::prctl::set_thp_disable(true)
    {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
    // An endpoint runs on one thread unless its config says otherwise; a server on one
    // worker per core; one-shot commands on one thread.
    let threads = match &cli.command {
        Command::Endpoint(a) => a
            .link
            .load()
            .ok()
            .and_then(|c| c.runtime.worker_threads)
            .unwrap_or(1),
        Command::Server(a) => a
            .link
            .load()
            .ok()
            .and_then(|c| c.runtime.worker_threads)
            .unwrap_or(0),
        _ => 0,
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b.enable_all().build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cmd::nodes::NotConfigured>().is_some() {
                // EX_CONFIG: the service unit does not restart on it.
                return std::process::ExitCode::from(78);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Ca(c) => ca(c)?,
        Command::Server(a) => server(a).await?,
        Command::Endpoint(a) => endpoint(a).await?,
        Command::Status(a) => status(a).await?,
        Command::Ring(RingCommand::Show(a)) => ring_show(a).await?,
        Command::Ask(a) => return ask(a).await,
        Command::Results(a) => results(a).await?,
        Command::Questions(a) => questions(a).await?,
        Command::Audit(a) => return audit(a).await,
        Command::Act(a) => return act(a).await,
        Command::Action(c) => return action(c).await,
        Command::Package(c) => return package(c).await,
        Command::Ioc(c) => return cmd::cases::ioc(c).await,
        Command::Export(a) => return cmd::export::export(a).await,
        Command::Saved(SavedCommand::Export {
            name,
            to,
            hec_token,
            hec_token_file,
            off,
            op,
        }) => {
            let token = cmd::export::token(hec_token, hec_token_file.as_deref())?;
            let to = if off { None } else { to };
            return desk_command(&op, DeskRequest::SavedExport { name, to, token }).await;
        }
        Command::Case(c) => return cmd::cases::case(c).await,
        #[cfg(feature = "simulation")]
        Command::Sim(a) if a.virtual_time => {
            if a.transport != sim::SimTransport::Mem {
                bail!("--virtual-time runs the in-memory transport only");
            }
            let r = std::thread::spawn(move || -> anyhow::Result<sim::SimReport> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .start_paused(true)
                    .build()?;
                rt.block_on(async {
                    let (mut fleet, started) = sim::start(&a).await?;
                    let r = sim::measure(&a, &fleet, started).await;
                    fleet.shutdown().await;
                    let r = r?;
                    if a.json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        sim::print(&r);
                    }
                    Ok(r)
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the virtual-time sim panicked"))??;
            if !r.all_answered {
                bail!("not every endpoint answered every question");
            }
        }
        #[cfg(feature = "simulation")]
        Command::Sim(a) => {
            let (mut fleet, started) = sim::start(&a).await?;
            let r = sim::measure(&a, &fleet, started).await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    fleet.shutdown().await;
                    return Err(e);
                }
            };
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                sim::print(&r);
            }
            match (a.serve, &a.cert_dir) {
                (Some(addr), Some(dir)) => {
                    sim::serve(fleet, addr, dir, a.metrics_listen, wait_for_shutdown()).await?
                }
                _ => fleet.shutdown().await,
            }
            if !r.all_answered {
                bail!("not every endpoint answered every question");
            }
        }
        Command::Chaos(a) => return chaos_command(a).await,
        #[cfg(feature = "simulation")]
        Command::Bench(BenchCommand::Scale {
            out,
            max_endpoints,
            questions,
        }) => {
            bench::scale(&out, max_endpoints, questions)?;
        }
        Command::Bench(BenchCommand::Recorder {
            interval_ms,
            samples,
        }) => {
            bench::recorder(std::time::Duration::from_millis(interval_ms), samples).await?;
        }
        Command::Bench(BenchCommand::Processes {
            endpoints,
            ring_size,
            idle_secs,
            config,
            json,
        }) => {
            let r = bench_processes::run(&bench_processes::ProcessBench {
                endpoints,
                ring_size,
                idle: std::time::Duration::from_secs(idle_secs.max(1)),
                config,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.table());
            }
        }
        Command::Bench(BenchCommand::Search) => {
            use rollcall_actors::search::{HELD_OUT, REQUESTS, hit_rates};
            let catalog = rollcall_actors::sensors::catalog_with(&[]);
            println!("| set | requests | top-1 | top-3 |");
            println!("|---|---:|---:|---:|");
            let mut all_misses = Vec::new();
            for (name, set) in [("test set", REQUESTS), ("held out", HELD_OUT)] {
                let (top1, top3, misses) = hit_rates(set, &catalog);
                println!(
                    "| {name} | {} | {:.1}% | {:.1}% |",
                    set.len(),
                    top1 * 100.0,
                    top3 * 100.0
                );
                all_misses.extend(misses);
            }
            for (request, got) in all_misses {
                println!("missed in the top three: {request:?} -> {got:?}");
            }
        }
        Command::Search(a) => {
            return desk_command(&a.op, DeskRequest::Search { text: a.words }).await;
        }
        Command::Saved(SavedCommand::Add {
            name,
            question,
            every_secs,
            op,
        }) => {
            let q = SavedQuestion {
                name,
                text: question,
                every_secs,
            };
            return desk_command(&op, DeskRequest::Save(q)).await;
        }
        Command::Saved(SavedCommand::List(op)) => {
            return desk_command(&op, DeskRequest::Saved).await;
        }
        Command::Saved(SavedCommand::Run {
            name,
            op,
            out,
            wait_secs,
        }) => {
            let desk = DeskClient::connect(op.server, &op.cert_dir).await?;
            return watch(desk, DeskRequest::RunSaved { name }, wait_secs, &out).await;
        }
        Command::Sensor(SensorCommand::List(op)) => {
            return desk_command(&op, DeskRequest::Sensors).await;
        }
        Command::Sensor(SensorCommand::Add {
            name,
            script_file,
            op,
        }) => {
            let script = std::fs::read_to_string(&script_file)
                .with_context(|| format!("reading {}", script_file.display()))?;
            return desk_command(&op, DeskRequest::AddSensor { name, script }).await;
        }
        Command::Patches(a) => {
            let text = std::fs::read_to_string(&a.file)
                .with_context(|| format!("reading {}", a.file.display()))?;
            let mut levels = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut f = line.split_whitespace();
                match (f.next(), f.next(), f.next()) {
                    (Some(p), Some(v), None) => levels.push(PatchLevel {
                        package: p.into(),
                        min_version: v.into(),
                    }),
                    _ => bail!(
                        "{}:{}: expected `package minimum-version`",
                        a.file.display(),
                        n + 1
                    ),
                }
            }
            return desk_command(&a.op, DeskRequest::SetBaseline(levels)).await;
        }
        Command::Demo(a) => return demo(a).await,
        Command::Console(a) => {
            let c =
                rollcall::console::Console::start(a.op.server, &a.op.cert_dir, a.listen).await?;
            println!("console at {}", c.url);
            println!("  acting as {} ({})", c.me().name, c.me().role);
            c.run().await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
