//! The wire messages and the answer encodings, case by case.

use super::*;

fn answer(os: &str) -> EncodedAnswer {
    EncodedAnswer::new(&NodeAnswer {
        rows: Some(vec![vec!["linux".into(), os.into()]]),
        problems: vec![],
    })
}

fn id(s: &str) -> NodeId {
    NodeId(s.into())
}

/// Every (machine, OS version) in `p`, sorted.
fn sorted_entries(p: &Partial) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = p
        .entries()
        .map(|(n, a)| {
            let a: NodeAnswer = rmp_serde::from_slice(a).expect("an answer");
            (n.to_string(), a.rows.expect("rows")[0][1].clone())
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn a_partial_keeps_each_distinct_answer_once_and_survives_the_wire() {
    let mut p = Partial::default();
    p.add(&id("a1"), &answer("6.1").into());
    p.add(&id("b22"), &answer("6.8").into());
    p.add(&id("c333"), &answer("6.1").into());
    p.add(&id("d4"), &answer("6.8").into());
    p.add(&id("a1"), &answer("6.1").into()); // a repeat from a rerouted round
    assert_eq!(p.groups().count(), 2);
    assert_eq!(p.len(), 5);
    assert!(p.contains(&id("d4")) && !p.contains(&id("e5")));
    let bytes = rollcall_runtime::wire::encode_body(&p).expect("encodes");
    let back: Partial = rollcall_runtime::wire::decode_body(&bytes).expect("decodes");
    assert_eq!(back, p);
    assert_eq!(
        sorted_entries(&back),
        [
            ("a1".to_string(), "6.1".to_string()),
            ("a1".into(), "6.1".into()),
            ("b22".into(), "6.8".into()),
            ("c333".into(), "6.1".into()),
            ("d4".into(), "6.8".into()),
        ]
    );
}

#[test]
fn ids_added_at_every_hop_stay_whole_as_their_list_outgrows_each_header_size() {
    // Two answers, ids joining them in turn, each hop's partial decoded from the wire
    // first (as a member receives it): the first list passes 255 bytes (a one-byte
    // length) and then 65,535 (a two-byte one).
    let mut p = Partial::default();
    let mut want: Vec<(String, String)> = Vec::new();
    for i in 0..3_000u32 {
        let (who, os) = (
            format!("machine-{i:05}-{}", "x".repeat(10)),
            ["6.1", "6.8"][(i % 7 == 0) as usize],
        );
        let bytes = rollcall_runtime::wire::encode_body(&p).expect("encodes");
        p = rollcall_runtime::wire::decode_body(&bytes).expect("decodes");
        p.add(&id(&who), &answer(os).into());
        want.push((who, os.to_string()));
    }
    let bytes = rollcall_runtime::wire::encode_body(&p).expect("encodes");
    let back: Partial = rollcall_runtime::wire::decode_body(&bytes).expect("decodes");
    assert_eq!(back.groups().count(), 2);
    let biggest = back.groups().map(|(_, who)| who.len()).max();
    assert!(
        biggest > Some(65_535),
        "the big list took a four-byte length"
    );
    want.sort();
    assert_eq!(sorted_entries(&back), want);
}

#[test]
fn a_malformed_partial_is_refused_when_decoded_with_its_reason() {
    #[derive(Serialize)]
    struct Group {
        #[serde(with = "serde_bytes")]
        answer: Vec<u8>,
        #[serde(with = "serde_bytes")]
        who: Vec<u8>,
        #[serde(with = "serde_bytes")]
        tag: Vec<u8>,
    }
    let enc = |v: &dyn erased::Enc| v.enc();
    let mut who = IdList::default();
    who.push(&id("a1"));
    let who = who.packed;
    let good = rollcall_runtime::wire::encode_body(&NodeAnswer {
        rows: None,
        problems: vec!["uptime: timed out".into()],
    })
    .expect("encodes");
    let group = |answer: Vec<u8>, who: Vec<u8>| {
        vec![Group {
            answer,
            who,
            tag: vec![0; 16],
        }]
    };
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (enc(&group(good.clone(), who.clone())), None),
        (
            enc(&group(enc(&(1u8, "x")), who.clone())),
            Some("not an answer"),
        ),
        (
            enc(&group(enc(&(None::<u8>, [7u8])), who.clone())),
            Some("not an answer"),
        ),
        // A row cell that is not UTF-8; an answer that ends inside.
        (
            enc(&group(
                vec![0x92, 0x91, 0x91, 0xa2, 0xff, 0xfe, 0x90],
                who.clone(),
            )),
            Some("not an answer"),
        ),
        (
            enc(&group(vec![0x92, 0xc0], who.clone())),
            Some("not an answer"),
        ),
        (
            enc(&group(good.clone(), vec![0, 5, b'a', b'b'])),
            Some("ends inside an id"),
        ),
        (enc(&vec![(good.clone(), who.clone())]), Some("2 fields")),
        (
            enc(&vec![Group {
                answer: good.clone(),
                who: who.clone(),
                tag: vec![0; 15],
            }]),
            Some("a tag of 15 bytes"),
        ),
        (
            [enc(&group(good.clone(), who.clone())), vec![0xc0]].concat(),
            Some("bytes after"),
        ),
        (enc(&"groups"), Some("not a list of answers")),
        (vec![0x91, 0x93, 0xc4, 0x09, 1], Some("ends early")),
    ];
    for (raw, why) in cases {
        let bytes = enc(&serde_bytes::ByteBuf::from(raw.clone()));
        let got = rollcall_runtime::wire::decode_body::<Partial>(&bytes);
        match (got, why) {
            (Ok(p), None) => {
                let (n, a) = p.entries().next().expect("one entry");
                assert_eq!(n, "a1");
                let a: NodeAnswer = rmp_serde::from_slice(a).expect("answer");
                assert_eq!(a.problems, ["uptime: timed out"]);
            }
            (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{e} should say {why}"),
            (got, _) => panic!("{raw:?}: expected {why:?}, got {got:?}"),
        }
    }
}

/// Encoding for the cases above, whatever their type.
mod erased {
    pub trait Enc {
        fn enc(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> Vec<u8> {
            rollcall_runtime::wire::encode_body(self).expect("encodes")
        }
    }
}

#[test]
fn a_truncated_or_non_utf8_id_list_is_refused_when_decoded() {
    #[derive(Serialize)]
    struct Raw {
        #[serde(with = "serde_bytes")]
        packed: Vec<u8>,
    }
    for (packed, why) in [
        (vec![0u8, 5, b'a', b'b'], "ends inside an id"),
        (vec![0u8, 2, b'a', b'b', 0], "ends inside a length"),
        (vec![0u8, 2, 0xff, 0xfe], "not UTF-8"),
    ] {
        let bytes = rollcall_runtime::wire::encode_body(&Raw { packed }).expect("encodes");
        let err = rollcall_runtime::wire::decode_body::<IdList>(&bytes)
            .expect_err("a malformed list must not decode");
        assert!(err.to_string().contains(why), "{err} should say {why}");
    }
}

#[test]
fn answers_as_written_are_read_by_hand_and_other_encodings_by_the_decoder() {
    let answers = [
        NodeAnswer {
            rows: Some(vec![vec!["Debian GNU/Linux".into(), "12".into()]]),
            problems: vec![],
        },
        NodeAnswer {
            rows: None,
            problems: vec!["uptime: timed out (5000 ms)".into()],
        },
        NodeAnswer {
            rows: Some(vec![
                vec!["Ubuntu – server".into(), String::new()],
                vec!["Ubuntu – server".into(), "vim".into()],
            ]),
            problems: vec!["ünïcode".into()],
        },
        NodeAnswer {
            rows: Some(vec![]),
            problems: vec![],
        },
    ];
    for a in &answers {
        let written = EncodedAnswer::new(a);
        assert!(EncodedAnswer::plain(&written.0), "{a:?} is read by hand");
        assert!(EncodedAnswer::check(&written.0).is_ok());
        // The same answer with named fields: not what a hop writes, still an answer.
        let named = rmp_serde::to_vec_named(a).expect("encodes");
        assert!(!EncodedAnswer::plain(&named));
        assert!(
            EncodedAnswer::check(&named).is_ok(),
            "{a:?} with named fields"
        );
        // Cut short anywhere, or followed by a stray byte: not read by hand.
        for end in 0..written.0.len() {
            assert!(
                !EncodedAnswer::plain(&written.0[..end]),
                "{a:?} cut at {end}"
            );
        }
        assert!(!EncodedAnswer::plain(&[&written.0[..], &[0xc0]].concat()));
    }
    // A cell that is not UTF-8 is refused by both.
    let broken = [0x92, 0x91, 0x91, 0xa2, 0xff, 0xfe, 0x90];
    assert!(!EncodedAnswer::plain(&broken));
    assert!(EncodedAnswer::check(&broken).is_err());
}

#[test]
fn ids_are_checked_one_by_one_whenever_the_list_is_not_all_ascii() {
    #[derive(Serialize)]
    struct Raw {
        #[serde(with = "serde_bytes")]
        packed: Vec<u8>,
    }
    let decode = |packed: Vec<u8>| {
        let bytes = rollcall_runtime::wire::encode_body(&Raw { packed }).expect("encodes");
        rollcall_runtime::wire::decode_body::<IdList>(&bytes)
    };
    let long = "f".repeat(200);
    let mut good = IdList::default();
    for i in ["e0001", "é-machine", long.as_str(), "e0002"] {
        good.push(&id(i));
    }
    let listed = decode(good.packed.clone()).expect("whole UTF-8 ids decode");
    assert_eq!(
        listed.iter().collect::<Vec<_>>(),
        ["e0001", "é-machine", long.as_str(), "e0002"]
    );
    // An ASCII list but for one id's broken byte, far down the list.
    let mut bad = IdList::default();
    for i in 0..40 {
        bad.push(&id(&format!("e{i:04}")));
    }
    let mut packed = bad.packed;
    packed.extend_from_slice(&[0, 3, b'x', 0xc3, b'y']);
    let err = decode(packed).expect_err("a broken id must not decode");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    // A long id's length byte is over 127: the list is not ASCII, each id is checked.
    let mut with_long = IdList::default();
    with_long.push(&id(&long));
    let mut packed = with_long.packed;
    packed.extend_from_slice(&[0, 2, 0xff, 0xfe]);
    let err = decode(packed).expect_err("a broken id must not decode");
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn a_whole_fleet_ring_view_fits_one_reply_and_keeps_every_count() {
    let member = |r: usize, i: usize| MemberReport {
        id: NodeId::new(format!("{r:08x}{i:08x}")),
        addr: format!("10.{}.{}.{}:7000", r / 256, r % 256, i % 250 + 1)
            .parse()
            .expect("addr"),
        hostname: format!("host-{r}-{i}.example.com").into(),
        health: Health::Ok,
        leads: LeaderSides::default(),
    };
    let report = RingsReport {
        rings: (0..1000)
            .map(|r| RingReport {
                ring: RingId(format!("10.{}.{}.0/24", r / 256, r % 256)),
                members: (0..100).map(|i| member(r, i)).collect(),
                leader_links: 2,
                members_total: 0,
            })
            .collect(),
        isolated: (0..5000).map(|i| member(9999, i)).collect(),
        isolated_total: 0,
        server_connections: 2000,
        ring_connections: 2000,
    };
    let whole = rollcall_runtime::wire::encode_body(&report).expect("encodes");
    assert!(whole.len() > 1024 * 1024, "{} bytes", whole.len());
    let cut = report.clone().within_one_reply();
    let bytes = rollcall_runtime::wire::encode_body(&cut).expect("encodes");
    assert!(bytes.len() < 512 * 1024, "{} bytes", bytes.len());
    assert!(
        cut.rings
            .iter()
            .all(|r| r.members_total == 100 && r.members.len() == 2)
    );
    assert_eq!(cut.rings[7].members[1], report.rings[7].members[99]);
    assert_eq!(cut.isolated_total, 5000);
    // One ring alone is listed whole.
    let one = RingsReport {
        rings: report.rings[..1].to_vec(),
        isolated: vec![],
        ..report.clone()
    }
    .within_one_reply();
    assert_eq!(
        (one.rings[0].members.len(), one.rings[0].members_total),
        (100, 0)
    );
}
