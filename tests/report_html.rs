//! `report.html` in a real browser: Debian's headless Chromium loads the page of a grid1-sized
//! run (grid1's prompts, strategies, samples and lengths on the tiny model) and of a short real
//! run of both models on multilingual prompts, with no console message at all (an uncaught error
//! is one), and the sample viewer shows exactly the selected sample's text, token by token; a
//! click on a table header sorts the table and a hover over a token shows its trace. A
//! screenshot of the viewer is kept as a test artifact (target/test-artifacts/report-viewer.png).
//!
//! Chromium is installed when asked (`DECLAB_TEST_INSTALL=1`, as root, as `.ci/run` does);
//! without it and unasked, the browser part is skipped with a message saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use declab::record::SampleRecord;

/// `/usr/bin/chromium`, installed from Debian's packages when asked; `None` (skip) otherwise.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.is_file() {
        return Some(path);
    }
    if !install_when_asked("chromium", "Debian's chromium (for the browser check)") {
        return None;
    }
    assert!(
        path.is_file(),
        "apt-get installed chromium, but not as {}",
        path.display()
    );
    Some(path)
}

/// Chromium headless on `page#hash`: the DOM after the page's script ran (`--dump-dom`), or a
/// screenshot into `shot`. Panics on any console line (messages and uncaught errors alike: the
/// page logs nothing when it works) and on any attempt to reach the network.
fn browse(chromium: &Path, page: &Path, hash: &str, shot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match shot {
        Some(s) => c
            .arg("--window-size=1400,1100")
            .arg(format!("--screenshot={}", s.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c
        .arg(format!("file://{}{hash}", page.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "the page wrote to the console (hash {hash:?}):\n{}",
        console.join("\n")
    );
    for net in ["net::ERR", "http://", "https://"] {
        assert!(
            !stderr
                .lines()
                .any(|l| l.contains(net) && !l.contains("dbus")),
            "the page reached for the network ({net}):\n{stderr}"
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// The text inside the element with id `id` of a serialized DOM (tags dropped, entities
/// decoded), and how many token spans it holds; `None` when there is no such element.
fn element_text(dom: &str, id: &str) -> Option<(String, usize)> {
    let open = dom.find(&format!("id=\"{id}\""))?;
    let start = open + dom[open..].find('>')? + 1;
    let (mut depth, mut i, mut end) = (0usize, start, None);
    while let Some(rel) = dom[i..].find('<') {
        let at = i + rel;
        if dom[at..].starts_with("</span>") {
            if depth == 0 {
                end = Some(at);
                break;
            }
            depth -= 1;
        } else if dom[at..].starts_with("<span") {
            depth += 1;
        }
        i = at + 1;
    }
    let inner = &dom[start..end?];
    let tokens = inner.matches("<span class=\"tok").count();
    let mut text = String::new();
    let mut rest = inner;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        rest = &rest[lt + rest[lt..].find('>')? + 1..];
    }
    text.push_str(rest);
    Some((unescape(&text), tokens))
}

/// The serialized DOM from `start` (an opening tag's beginning) to the end of its line.
fn element_after<'a>(dom: &'a str, start: &str) -> Option<&'a str> {
    let at = dom.find(start)? + start.len();
    Some(dom[at..].lines().next().unwrap_or(""))
}

/// Table `id`'s column headed `head...`: the cells' text, and the first cell of each row, in
/// the order of its body rows.
fn table_column(dom: &str, id: &str, head: &str) -> (Vec<String>, Vec<String>) {
    let at = dom.find(&format!("id=\"{id}\"")).expect("the table");
    let table = &dom[at..at + dom[at..].find("</table>").unwrap()];
    let cells = |row: &str, tag: &str| -> Vec<String> {
        row.split(&format!("<{tag}"))
            .skip(1)
            .filter(|c| c.starts_with(['>', ' '])) // not <thead, <tbody
            .map(|c| {
                let c = &c[c.find('>').unwrap() + 1..];
                unescape(c[..c.find(&format!("</{tag}>")).unwrap()].trim())
            })
            .collect()
    };
    let (thead, tbody) = table.split_once("<tbody>").unwrap();
    let col = cells(thead, "th")
        .iter()
        .position(|h| h.starts_with(head))
        .expect("the column");
    let rows: Vec<Vec<String>> = tbody.split("<tr").skip(1).map(|r| cells(r, "td")).collect();
    (
        rows.iter().map(|r| r[col].clone()).collect(),
        rows.iter().map(|r| r[0].clone()).collect(),
    )
}

/// HTML text as Chromium serializes it: `&amp; &lt; &gt; &nbsp;` (and numeric references).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').map(|k| amp + k).unwrap();
        let name = &rest[amp + 1..semi];
        match name {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "nbsp" => out.push('\u{a0}'),
            n if n.starts_with("#x") => {
                out.push(char::from_u32(u32::from_str_radix(&n[2..], 16).unwrap()).unwrap())
            }
            n if n.starts_with('#') => out.push(char::from_u32(n[1..].parse().unwrap()).unwrap()),
            n => panic!("unexpected entity &{n};"),
        }
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}

fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => o.push(b as char),
            b => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// The viewer's hash selecting `a` in pane A and `b` (same model and prompt) in pane B.
fn hash(a: &SampleRecord, b: Option<&SampleRecord>) -> String {
    let b = match b {
        Some(b) => format!("{}/{}", enc(&b.strategy), b.sample_index),
        None => "none".into(),
    };
    format!(
        "#a={}/{}/{}/{}&b={b}&color=entropy",
        enc(&a.model),
        enc(&a.prompt_id),
        enc(&a.strategy),
        a.sample_index
    )
}

/// Pane A and B of `dom` show exactly `a`'s and `b`'s text, one span per token.
fn assert_shows(dom: &str, a: &SampleRecord, b: Option<&SampleRecord>) {
    for (id, r) in [("text-a", Some(a)), ("text-b", b)] {
        match r {
            Some(r) => {
                let (text, tokens) = element_text(dom, id)
                    .unwrap_or_else(|| panic!("no #{id} in the page for {}", r.strategy));
                assert_eq!(
                    text, r.text,
                    "#{id}: {} {} #{}",
                    r.model, r.strategy, r.sample_index
                );
                assert_eq!(tokens, r.token_ids.len(), "#{id}: one span per token");
            }
            None => assert!(element_text(dom, id).is_none(), "#{id} shown for b=none"),
        }
    }
}

/// The page itself: one file, under a few MB, nothing fetched from anywhere.
fn assert_self_contained(page: &str) {
    assert!(page.len() < 4 << 20, "report.html is {} bytes", page.len());
    for external in [
        "<script src",
        "<link",
        "<img src=\"http",
        "url(http",
        "@import",
        "src=\"//",
    ] {
        assert!(!page.contains(external), "report.html holds {external:?}");
    }
    assert_eq!(
        page.matches("<figure class=\"plot\"").count(),
        4,
        "grid1's plots, inline"
    );
}

#[test]
fn grid1_sized_report_loads_in_chromium_and_shows_each_selected_sample() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    // grid1 itself, on the tiny model
    let grid1 = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/grid1.yaml"),
    )
    .unwrap();
    let (head, rest) = grid1.split_once("models:\n").unwrap();
    let (_, rest) = rest.split_once("prompts:\n").unwrap();
    let yaml = format!(
        "{head}models:\n  - id: tiny\n    gguf: {}\n    tokenizer: {}\nprompts:\n{rest}",
        m.gguf.display(),
        m.tokenizer.display()
    );
    let cfg = dir.path().join("grid1.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = dir.path().join("out");
    run_into(&cfg, &out);
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    let records = read_records(&out.join("samples.jsonl"));
    assert_eq!(records.len(), 162);
    assert!(records
        .iter()
        .all(|r| r.text_ends.len() == r.token_ids.len()));

    // `declab report` writes the same page again from the folder
    std::fs::remove_file(&page).unwrap();
    declab()
        .args(["report", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);

    let Some(chromium) = chromium() else { return };
    let find = |strategy: &str, prompt: &str, i: usize| {
        records
            .iter()
            .find(|r| {
                r.strategy.starts_with(strategy) && r.prompt_id == prompt && r.sample_index == i
            })
            .unwrap()
    };
    let switch = find("entropy_switch", "lighthouse", 1);
    let solve = find("target_entropy(target=2.5", "lighthouse", 1);
    let dom = browse(&chromium, &page, &hash(switch, Some(solve)), None);
    assert_shows(&dom, switch, Some(solve));
    for (a, b) in [
        (
            find("greedy", "tea", 0),
            Some(find("temperature(t=1.3)", "tea", 0)),
        ),
        (find("top_p(p=0.9,", "dragon", 2), None),
    ] {
        let dom = browse(&chromium, &page, &hash(a, b), None);
        assert_shows(&dom, a, b);
    }
    // Interaction, through the page's own handlers: a click on a table header (twice: highest
    // first) and a hover over a token, dispatched by a script appended to a copy of the page.
    let probe = page.with_file_name("probe.html");
    std::fs::write(
        &probe,
        html.replace(
            "</body>",
            "<script>\
             var th = Array.prototype.find.call(document.querySelectorAll('#report th'), \
               function (h) { return h.textContent.indexOf('distinct_2 ') === 0; });\
             th.closest('table').id = 'sorted-under-test'; th.click(); th.click();\
             document.querySelector('#text-a span[data-i=\"3\"]')\
               .dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));\
             </script></body>",
        ),
    )
    .unwrap();
    let dom = browse(&chromium, &probe, &hash(switch, Some(solve)), None);
    let (column, rows) = table_column(&dom, "sorted-under-test", "distinct_2 ");
    let values: Vec<f64> = column
        .iter()
        .map(|c| c.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(values.len(), 9, "one row per strategy: {column:?}");
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "clicked twice, the table is not highest first: {values:?}"
    );
    let mut strategies = rows;
    strategies.sort();
    let mut want: Vec<String> = records
        .iter()
        .filter(|r| r.prompt_id == "tea" && r.sample_index == 0)
        .map(|r| r.strategy.clone())
        .collect();
    want.sort();
    assert_eq!(
        strategies
            .iter()
            .map(|s| s.trim_end_matches(" (baseline)"))
            .collect::<Vec<_>>(),
        want
    );
    let tip = element_after(&dom, "<div class=\"tip\"").expect("the hover tooltip");
    assert!(
        !tip.starts_with(" hidden"),
        "the tooltip is hidden after a hover: {tip}"
    );
    let entropy = format!("<th>entropy</th><td>{:.3}</td>", switch.trace.entropy[3]);
    assert!(tip.contains(&entropy), "the tooltip lacks {entropy}: {tip}");

    // no selection (the report tab), the viewer tab, and a selection naming nothing: no errors
    for h in ["", "#viewer", "#a=nope/nope/nope/9&b=nope/1&color=nope"] {
        browse(&chromium, &page, h, None);
    }

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report-viewer.png");
    let _ = std::fs::remove_file(&shot);
    browse(&chromium, &page, &hash(switch, Some(solve)), Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // a blank 1400x1100 page compresses to a few KB; the viewer's coloured tokens do not
    assert!(
        png.len() > 40_000,
        "the screenshot looks blank ({} bytes)",
        png.len()
    );
    eprintln!("screenshot of the viewer: {}", shot.display());
}

/// Real text: both real models on prompts that draw non-ASCII continuations (CJK, emoji,
/// accents), the pieces of every sample joining to its text, and the browser showing each
/// sample whose text is not plain ASCII exactly.
#[test]
fn real_models_multilingual_text_shows_exactly_in_chromium() {
    let m = real_models_dir();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("intl.yaml");
    std::fs::write(
        &cfg,
        format!(
            concat!(
                "name: intl\nseed: 5\nmodels:\n",
                "  - id: gemma3-270m\n",
                "    gguf: {m}/gemma-3-270m/gemma-3-270m-q4_k_m.gguf\n",
                "    tokenizer: {m}/gemma-3-270m/tokenizer.json\n",
                "  - id: smollm2-135m\n",
                "    gguf: {m}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf\n",
                "prompts:\n",
                "  - {{id: ja, text: \"日本語で短い物語を書いてください。昔々、\"}}\n",
                "  - {{id: emoji, text: \"Reply only with emoji: 🦀🍕😀\"}}\n",
                "  - {{id: fr, text: \"Écris une phrase en français sur le café crème et la crêpe:\"}}\n",
                "samples: 2\nmax_new_tokens: 24\nstrategies:\n",
                "  - kind: greedy\n",
                "  - {{kind: temperature, temperature: 1.0}}\n",
                "  - {{kind: entropy_switch, entropy_low: 1.0, entropy_high: 3.0, low: {{kind: greedy}}, mid: {{kind: temperature, temperature: 0.7}}, high: {{kind: temperature, temperature: 1.0}}}}\n",
            ),
            m = m.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    run_into(&cfg, &out);
    let records = read_records(&out.join("samples.jsonl"));
    assert_eq!(records.len(), 36);
    let mut split = 0;
    for r in &records {
        let pieces = declab::engine::offsets::pieces(&r.text, &r.text_ends)
            .unwrap_or_else(|| panic!("{} {}: ends do not fit the text", r.model, r.strategy));
        assert_eq!(pieces.len(), r.token_ids.len());
        assert_eq!(pieces.concat(), r.text);
        split += pieces.iter().filter(|p| p.is_empty()).count();
    }
    let wide: Vec<&SampleRecord> = records.iter().filter(|r| !r.text.is_ascii()).collect();
    assert!(
        wide.len() >= 12,
        "only {} samples hold non-ASCII text",
        wide.len()
    );
    eprintln!(
        "{} non-ASCII samples, {split} tokens end inside a character",
        wide.len()
    );

    let Some(chromium) = chromium() else { return };
    let page = out.join("report.html");
    for r in wide {
        let dom = browse(&chromium, &page, &hash(r, None), None);
        assert_shows(&dom, r, None);
    }
    // the switch's branch changes are marked on their tokens (step 0 and each change)
    let changes = |r: &SampleRecord| {
        r.trace
            .branch
            .as_ref()
            .map_or(0, |b| b.windows(2).filter(|w| w[0] != w[1]).count())
    };
    let switch = records.iter().max_by_key(|r| changes(r)).unwrap();
    assert!(changes(switch) >= 3, "no switch sample changes branch");
    let dom = browse(&chromium, &page, &hash(switch, None), None);
    assert_shows(&dom, switch, None);
    assert_eq!(
        dom.matches("\"tok branch-change").count(),
        changes(switch) + 1
    );
}
