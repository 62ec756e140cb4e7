//! `sitesyncctl catalog …`, run as the built binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const MICROSOFT: &str = "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml";
const DEFENDER_DEFINITIONS: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe-r200.xml";
const DEFENDER_DELTAS: &str = "266f6222-c89d-43f2-9f8a-69340271e677-r200.xml";

fn sitesyncctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitesyncctl"))
        .args(args)
        .output()
        .expect("sitesyncctl runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "sitesyncctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn xml_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "xml")
        })
        .count()
}

#[test]
fn generate_then_inspect_as_json() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("catalog");
    let generated = sitesyncctl(&[
        "catalog",
        "generate",
        "--updates",
        "150",
        "--seed",
        "5",
        "--out",
        path_str(&out),
        "--output",
        "json",
    ]);
    let summary = stdout_json(&generated);
    assert_eq!(summary["documents"], 150);
    assert_eq!(summary["seed"], 5);
    assert_eq!(summary["categories"], 50);
    assert_eq!(xml_files(&out), 150);
    let on_disk: u64 = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(summary["bytes"].as_u64(), Some(on_disk));

    let inspected = stdout_json(&sitesyncctl(&[
        "catalog",
        "inspect",
        path_str(&out),
        "-o",
        "json",
    ]));
    let documents = inspected.as_array().unwrap();
    assert_eq!(documents.len(), 150);
    for document in documents {
        for key in [
            "update_id",
            "revision",
            "update_type",
            "publication_state",
            "title",
            "kb_article",
            "msrc_severity",
            "category_type",
            "categories",
            "prerequisites",
            "bundled",
            "superseded",
            "files",
        ] {
            assert!(document.get(key).is_some(), "{key} missing in {document}");
        }
        let file_name = Path::new(document["file"].as_str().unwrap())
            .file_name()
            .unwrap();
        let expected = format!(
            "{}-r{}.xml",
            document["update_id"].as_str().unwrap(),
            document["revision"]
        );
        assert_eq!(file_name.to_str().unwrap(), expected);
        for file in document["files"].as_array().unwrap() {
            assert_eq!(file["sha1"].as_str().unwrap().len(), 40);
            assert_eq!(file["sha256"].as_str().unwrap().len(), 64);
            assert!(
                file["download_url"]
                    .as_str()
                    .unwrap()
                    .starts_with("Content/")
            );
        }
    }
    let count = |field: &str, value: &str| documents.iter().filter(|d| d[field] == value).count();
    assert_eq!(count("update_type", "Category"), 50);
    assert_eq!(count("category_type", "UpdateClassification"), 9);
    assert!(count("update_type", "Software") > 50);
    let categorized = documents
        .iter()
        .filter(|d| {
            d["update_type"] == "Software" && d["categories"].as_array().unwrap().len() == 2
        })
        .count();
    assert!(
        categorized > 40,
        "{categorized} software updates name a product and a classification"
    );
}

#[test]
fn generate_prints_a_summary_table_and_is_deterministic() {
    let temp = tempfile::tempdir().unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    for dir in [&a, &b] {
        let output = sitesyncctl(&[
            "catalog",
            "generate",
            "--updates",
            "80",
            "--out",
            path_str(dir),
        ]);
        assert!(output.status.success());
        let table = String::from_utf8(output.stdout).unwrap();
        assert!(
            table.contains("documents") && table.contains("80"),
            "{table}"
        );
        assert!(table.contains("expired revisions"), "{table}");
    }
    for entry in fs::read_dir(&a).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(
            fs::read(a.join(&name)).unwrap(),
            fs::read(b.join(&name)).unwrap()
        );
    }
}

#[test]
fn generate_refuses_a_non_empty_directory_unless_forced() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path();
    fs::write(out.join("notes.txt"), "keep me").unwrap();
    let args = [
        "catalog",
        "generate",
        "--updates",
        "100",
        "--out",
        path_str(out),
    ];

    let refused = sitesyncctl(&args);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(stderr.contains(path_str(out)), "{stderr}");
    assert_eq!(xml_files(out), 0, "nothing is written when refused");

    let forced = sitesyncctl(&[&args[..], &["--force"]].concat());
    assert!(forced.status.success());
    assert_eq!(xml_files(out), 100);

    // A smaller catalog replaces the documents of the earlier one; other files stay.
    let smaller = sitesyncctl(&[
        "catalog",
        "generate",
        "--updates",
        "60",
        "--out",
        path_str(out),
        "--force",
        "-o",
        "json",
    ]);
    assert_eq!(stdout_json(&smaller)["removed_documents"], 100);
    assert_eq!(xml_files(out), 60);
    assert_eq!(
        fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn inspect_a_real_document_as_json() {
    let output = sitesyncctl(&[
        "catalog",
        "inspect",
        "--output",
        "json",
        path_str(&fixture(DEFENDER_DEFINITIONS)),
        path_str(&fixture(DEFENDER_DELTAS)),
        path_str(&fixture(MICROSOFT)),
    ]);
    let documents = stdout_json(&output);
    let [definitions, deltas, microsoft] = documents.as_array().unwrap().as_slice() else {
        panic!("three documents expected: {documents}");
    };

    assert_eq!(
        definitions["update_id"],
        "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe"
    );
    assert_eq!(definitions["revision"], 200);
    assert_eq!(definitions["update_type"], "Software");
    assert_eq!(definitions["publication_state"], "Published");
    assert_eq!(definitions["kb_article"], "2267602");
    assert_eq!(definitions["msrc_severity"], Value::Null);
    assert_eq!(definitions["category_type"], Value::Null);
    assert!(
        definitions["title"].as_str().unwrap().starts_with(
            "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602"
        )
    );
    assert_eq!(
        definitions["categories"],
        serde_json::json!([
            "e0789628-ce08-4437-be74-2495b842f43b",
            "8c3fcc84-7410-4a95-8b89-a166a0190486"
        ])
    );
    assert_eq!(definitions["superseded"].as_array().unwrap().len(), 10);
    let bundled = definitions["bundled"].as_array().unwrap();
    assert_eq!(bundled.len(), 4);
    let members: usize = bundled
        .iter()
        .map(|g| g["members"].as_array().unwrap().len())
        .sum();
    assert_eq!(members, 124);
    assert_eq!(bundled[0]["members"][0]["revision"], 200);

    let files = deltas["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["name"], "AM_Delta.exe");
    assert_eq!(files[0]["size"], 11_606_440);
    assert_eq!(files[0]["sha1"], "87f5bd0469585006aa5d3a77d1c662fd2895ddcd");
    assert_eq!(
        files[0]["sha256"],
        "026b74ab29b2e4ab113a2c085e6e1020857be49bb8afe0a5dbc3e0f2068b5d40"
    );
    assert!(files[0]["download_url"].as_str().unwrap().len() > "Content/".len());

    assert_eq!(microsoft["update_type"], "Category");
    assert_eq!(microsoft["category_type"], "Company");
    assert_eq!(microsoft["title"], "Microsoft");
    assert_eq!(microsoft["revision"], 101);
}

#[test]
fn inspect_prints_a_table_for_people() {
    let output = sitesyncctl(&[
        "catalog",
        "inspect",
        path_str(&fixture(DEFENDER_DEFINITIONS)),
    ]);
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains("a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe"),
        "{table}"
    );
    assert!(table.contains("2267602"), "{table}");
    assert!(table.contains("Security Intelligence Update"), "{table}");
    assert!(output.stderr.is_empty());
}

#[test]
fn a_bad_document_is_named_on_stderr_and_fails_the_command() {
    let temp = tempfile::tempdir().unwrap();
    let real = fs::read(fixture(DEFENDER_DELTAS)).unwrap();
    let truncated = temp.path().join("truncated.xml");
    fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let wrong_namespace = temp.path().join("wrong-namespace.xml");
    let text = String::from_utf8(fs::read(fixture(MICROSOFT)).unwrap()).unwrap();
    fs::write(
        &wrong_namespace,
        text.replace("2002/12/Update\"", "2002/12/Elsewhere\""),
    )
    .unwrap();
    fs::copy(fixture(MICROSOFT), temp.path().join("good.xml")).unwrap();

    let output = sitesyncctl(&["catalog", "inspect", "-o", "json", path_str(temp.path())]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(path_str(&truncated)), "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(stderr.contains(path_str(&wrong_namespace)), "{stderr}");
    assert!(stderr.contains("2 of 3 documents"), "{stderr}");
    // The good document is still printed, as valid JSON.
    let documents: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(documents.as_array().unwrap().len(), 1);
    assert_eq!(documents[0]["title"], "Microsoft");

    let missing = sitesyncctl(&[
        "catalog",
        "inspect",
        path_str(&temp.path().join("missing.xml")),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("missing.xml"));
}
