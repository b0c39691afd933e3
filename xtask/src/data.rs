//! `cargo xtask data <kind> --count N --seed S [--out FILE]`: synthetic data
//! as JSON lines, for other tools and outside validators; and
//! `cargo xtask data validate FILE`: check exported claims.

use std::io::{BufRead, BufWriter, Write};

use anyhow::{Context, Result, bail};
use fixtures::{ComplianceKind, Generator};

const USAGE: &str = "usage: cargo xtask data <kind> [--count N] [--seed S] [--out FILE]
       cargo xtask data validate FILE

kinds: claims (full scenarios: patient, coverage, provider, visit, claim, remittance),
       patients, providers, compliance, analytics
Same seed, byte-identical output. Writes to standard output unless --out is given.";

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        ["validate", file] => validate(file),
        ["validate", ..] => bail!("`data validate` takes one file\n\n{USAGE}"),
        [kind, rest @ ..] => export(kind, rest),
        [] => bail!("{USAGE}"),
    }
}

fn export(kind: &str, rest: &[&str]) -> Result<()> {
    let (mut count, mut seed, mut out) = (1000u64, 1u64, None::<String>);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .copied()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match *flag {
            "--count" => {
                count = value("--count")?
                    .parse()
                    .context("--count takes a whole number")?
            }
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .context("--seed takes a whole number")?
            }
            "--out" => out = Some(value("--out")?.to_string()),
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    let sink: Box<dyn Write> = match &out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let mut g = Generator::new(seed);
    let progress_every = if count >= 50_000 {
        count / 10
    } else {
        u64::MAX
    };
    for i in 0..count {
        let line = match kind {
            "claims" | "scenarios" => serde_json::to_string(&g.scenario()),
            "patients" => serde_json::to_string(&g.patient()),
            "providers" => serde_json::to_string(&g.provider()),
            "compliance" => {
                serde_json::to_string(&g.compliance_scenario(ComplianceKind::ALL[(i % 5) as usize]))
            }
            "analytics" => {
                let tenant = format!("tenant-{:03}", i % 20);
                serde_json::to_string(&g.analytics_events(&tenant, 1)[0])
            }
            other => bail!("unknown kind `{other}`\n\n{USAGE}"),
        }?;
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        if (i + 1) % progress_every == 0 {
            eprintln!("[data] {}/{count} {kind}", i + 1);
        }
    }
    w.flush()?;
    if let Some(path) = out {
        eprintln!("[data] wrote {count} {kind} (seed {seed}) to {path}");
    }
    Ok(())
}

fn validate(file: &str) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
    let (mut n, mut bad) = (0usize, 0usize);
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {file}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{file}:{}: not JSON", i + 1))?;
        let problems = fixtures::validate::scenario(&v);
        n += 1;
        if !problems.is_empty() {
            bad += 1;
            if bad <= 20 {
                eprintln!("{file}:{}: {}", i + 1, problems.join("; "));
            }
        }
    }
    println!("{n} claims checked: {} valid, {bad} invalid", n - bad);
    println!(
        "checks: ICD-10-CM codes billable in the shipped table ({}), NPI Luhn check digits, MBI format rules, totals = sum of lines, dates consistent",
        fixtures::icd10::SOURCE
    );
    if bad > 0 {
        bail!("{bad} of {n} claims are invalid");
    }
    Ok(())
}
