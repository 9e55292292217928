//! The search box's ranking on its request sets and on what it must never do.

use super::*;
use crate::sensors::catalog_with;

fn top(q: &str, vocab: &Vocabulary) -> Vec<Suggestion> {
    search(q, &catalog_with(&[]), &[], vocab, 5)
}

#[test]
fn every_request_of_the_test_set_finds_its_question_in_the_top_three() {
    let catalog = catalog_with(&[]);
    for (request, want) in REQUESTS {
        assert!(parse(want, &catalog).is_ok(), "{want} must parse");
        let got = search(request, &catalog, &[], &Vocabulary::default(), 3);
        assert!(
            got.iter().any(|s| s.question == *want),
            "{request}: want {want}, got {:#?}",
            got
        );
    }
    let (top1, top3, misses) = hit_rates(REQUESTS, &catalog);
    assert!(REQUESTS.len() >= 40);
    assert_eq!(top3, 1.0, "{misses:?}");
    assert!(top1 >= 0.9, "top-1 share {top1}");
}

#[test]
fn a_suggestion_built_from_words_not_understood_never_ranks_first_over_an_understood_one() {
    let s = top("machines with flurbix and chrome", &Vocabulary::default());
    assert_eq!(s[0].not_understood, ["flurbix"]);
    // Nothing understood all the words: every suggestion says what it guessed.
    assert!(s.iter().all(|x| x.not_understood == ["flurbix"]), "{s:#?}");
    let s = top("uptime over a day", &Vocabulary::default());
    assert!(s[0].not_understood.is_empty());
    assert!(s.iter().skip(1).all(|x| x.score <= s[0].score));
}

#[test]
fn values_the_fleet_reported_are_understood() {
    let mut vocab = Vocabulary::default();
    let plain = top("machines with frobd", &vocab);
    assert_eq!(plain[0].not_understood, ["frobd"]);
    vocab.learn("Running Processes", "frobd");
    vocab.learn("Logged In Users", "mallory");
    let s = top("machines with frobd", &vocab);
    assert_eq!(
        s[0].question,
        r#"Get Computer Name from all machines with Running Processes contains "frobd""#
    );
    assert!(s[0].not_understood.is_empty());
    let s = top("mallory", &vocab);
    assert_eq!(
        s[0].question,
        r#"Get Computer Name from all machines with Logged In Users contains "mallory""#
    );
}

#[test]
fn saved_questions_rank_first_and_every_suggestion_parses() {
    let saved = vec![SavedQuestion {
        name: "openssl hosts".into(),
        text: r#"Get Computer Name and OS Version from all machines with Installed Applications contains "openssl""#.into(),
        every_secs: None,
    }];
    let s = search(
        "openssl",
        &catalog_with(&[]),
        &saved,
        &Vocabulary::default(),
        5,
    );
    assert_eq!(s[0].saved.as_deref(), Some("openssl hosts"));
    assert!(s.len() > 1);
    for x in &s {
        assert!(
            parse(&x.question, &catalog_with(&[])).is_ok(),
            "{}",
            x.question
        );
    }
    assert!(search("", &catalog_with(&[]), &saved, &Vocabulary::default(), 5).is_empty());
    // A huge request is cut, not read at length.
    let huge = "chrome ".repeat(100_000);
    let s = search(&huge, &catalog_with(&[]), &saved, &Vocabulary::default(), 5);
    assert!(!s.is_empty());
}
