//! Actions on a simulated fleet (in-memory network, paused time): find → act → ask again,
//! with counts equal to the host profiles' ground truth.

use std::time::Duration;

use rollcall::fleet::Fleet;
use rollcall_actors::action::journal::Journal;
use rollcall_actors::action::server::ActRequest;
use rollcall_tests::eventually_or;
use rollcall_tests::fleet::formed;

#[tokio::test(start_paused = true)]
async fn find_act_and_ask_again_on_a_simulated_fleet() {
    let mut fleet = formed(200, 50, 7).await;
    for package in ["vim", "nginx"] {
        let having = |fleet: &Fleet| {
            fleet
                .endpoints
                .iter()
                .filter(|e| e.host.profile().packages.iter().any(|(n, _)| n == package))
                .count() as u64
        };
        let before = having(&fleet);
        assert!(before > 0, "no machine has {package}");
        let id = fleet
            .act(ActRequest::where_(
                "uninstall",
                &[package],
                format!("Installed Applications is \"{package}\""),
            ))
            .await
            .expect("act");
        // Uninstall waits for a second admin.
        let r = fleet.action(id).expect("report");
        assert!(r.awaiting_approval, "{r:?}");
        assert_eq!(r.targeted, 0);
        fleet.approve(id).await.expect("approve");
        eventually_or(
            "every targeted machine done",
            Duration::from_secs(30),
            || {
                let done = fleet.desk().actions().is_done(id);
                async move {
                    if done {
                        Ok(())
                    } else {
                        Err("not yet".to_string())
                    }
                }
            },
        )
        .await;
        let r = fleet.action(id).expect("report");
        assert_eq!(r.targeted, before, "{package}: {r:?}");
        assert_eq!(r.count("completed"), before, "{package}: {r:?}");
        assert_eq!(having(&fleet), 0, "{package} still installed somewhere");
        // Each machine ran it once.
        let ran: u32 = fleet.endpoints.iter().map(|e| e.executor.runs_of(id)).sum();
        assert_eq!(u64::from(ran), before);
        // Asked again: none has it.
        let q = fleet
            .ask(
                &format!("Get Computer Name from all machines with Installed Applications is \"{package}\""),
                Duration::from_secs(60),
            )
            .await
            .expect("ask");
        eventually_or("everyone answered again", Duration::from_secs(30), || {
            let n = fleet.rings().answered(q).unwrap_or(0);
            async move {
                if n == 200 {
                    Ok(())
                } else {
                    Err(format!("{n} of 200"))
                }
            }
        })
        .await;
        assert_eq!(fleet.progress(q).expect("progress").matched, 0);
    }
    fleet.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_action_never_starts_where_it_waited_or_had_not_arrived() {
    let mut fleet = formed(100, 50, 9).await;
    // One machine is away when the action goes out.
    let away = 17;
    fleet.kill(away);
    let id = fleet
        .act(ActRequest {
            spread_secs: 60,
            ..ActRequest::all("release", &[])
        })
        .await
        .expect("act");
    eventually_or("99 machines waiting", Duration::from_secs(30), || {
        let r = fleet.action(id).expect("report");
        async move {
            if r.count("waiting") == 99 {
                Ok(())
            } else {
                Err(format!("{:?}", r.counts))
            }
        }
    })
    .await;
    let said = fleet.cancel(id).await.expect("cancel");
    assert!(said.contains("cancel sent as action"), "{said}");
    // Every machine is either cancelled or had already run it (its share of the spread had
    // come before the cancel did).
    eventually_or(
        "99 machines cancelled or done",
        Duration::from_secs(30),
        || {
            let r = fleet.action(id).expect("report");
            async move {
                if r.count("cancelled") + r.count("completed") == 99 && r.done {
                    Ok(())
                } else {
                    Err(format!("{:?} done {}", r.counts, r.done))
                }
            }
        },
    )
    .await;
    let r = fleet.action(id).expect("report");
    let (cancelled, completed) = (r.count("cancelled"), r.count("completed"));
    assert!(cancelled >= 80, "{:?}", r.counts);
    assert_eq!(
        fleet.action(id).expect("report").phase,
        "out, cancelled by fleet-operator"
    );
    // The machine that was away comes back: the action is no longer handed to it, and the
    // cancel (handed over as a missed question) keeps it from ever running.
    fleet.restart(away).await.expect("restart");
    // Past every machine's share of the spread, nothing more has run.
    rollcall_tests::holds_for(
        "no cancelled machine runs the action",
        Duration::from_secs(90),
        || {
            let ran: u32 = fleet.endpoints.iter().map(|e| e.executor.runs_of(id)).sum();
            async move { u64::from(ran) == completed }
        },
    )
    .await;
    assert_eq!(
        fleet.action(id).expect("report").count("cancelled"),
        cancelled
    );
    let e = &fleet.endpoints[away];
    assert_eq!(
        e.journal.status(id),
        None,
        "the returning machine holds the cancel, not the action"
    );
    assert!(e.journal.get(id).is_some_and(|x| x.before_arrival));
    fleet.shutdown().await;
}
