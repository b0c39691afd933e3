//! `cargo xtask data <kind> --count N --seed S [--out FILE]`: synthetic data
//! as JSON lines, for other tools and outside validators; and
//! `cargo xtask data validate FILE`: check exported claims.

use std::io::{BufRead, BufWriter, Write};

use anyhow::{Context, Result, bail};
use healthcare_data::{ComplianceKind, Generator};

/// What `cargo xtask data` does: export one kind of record, or validate claims.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Full scenarios: patient, coverage, provider, visit, claim, remittance
    #[command(alias = "scenarios")]
    Claims(Export),
    /// Patients
    Patients(Export),
    /// Providers
    Providers(Export),
    /// Compliance scenarios, the five kinds in turn
    Compliance(Export),
    /// Analytics events, over 20 tenants
    Analytics(Export),
    /// Check exported claims: ICD-10-CM codes, NPI check digits, MBI format, totals, dates
    Validate {
        /// A JSON-lines file of claims (`cargo xtask data claims`)
        file: String,
    },
}

/// How many records, from which seed, to where.
#[derive(clap::Args)]
pub struct Export {
    /// How many records
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: u64,
    /// The generator's seed: the same seed gives byte-identical output
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Write to FILE instead of standard output
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
}

/// The kinds of record `data` exports.
#[derive(Clone, Copy)]
enum Kind {
    Claims,
    Patients,
    Providers,
    Compliance,
    Analytics,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Claims => "claims",
            Kind::Patients => "patients",
            Kind::Providers => "providers",
            Kind::Compliance => "compliance",
            Kind::Analytics => "analytics",
        }
    }

    /// Record `i` of this kind as one JSON line.
    fn line(self, g: &mut Generator, i: u64) -> serde_json::Result<String> {
        match self {
            Kind::Claims => serde_json::to_string(&g.scenario()),
            Kind::Patients => serde_json::to_string(&g.patient()),
            Kind::Providers => serde_json::to_string(&g.provider()),
            Kind::Compliance => {
                serde_json::to_string(&g.compliance_scenario(ComplianceKind::ALL[(i % 5) as usize]))
            }
            Kind::Analytics => {
                let tenant = format!("tenant-{:03}", i % 20);
                serde_json::to_string(&g.analytics_events(&tenant, 1)[0])
            }
        }
    }
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Validate { file } => validate(&file),
        Command::Claims(e) => export(Kind::Claims, e),
        Command::Patients(e) => export(Kind::Patients, e),
        Command::Providers(e) => export(Kind::Providers, e),
        Command::Compliance(e) => export(Kind::Compliance, e),
        Command::Analytics(e) => export(Kind::Analytics, e),
    }
}

fn export(kind: Kind, Export { count, seed, out }: Export) -> Result<()> {
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
        let line = kind.line(&mut g, i)?;
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        if (i + 1) % progress_every == 0 {
            eprintln!("[data] {}/{count} {}", i + 1, kind.name());
        }
    }
    w.flush()?;
    if let Some(path) = out {
        eprintln!(
            "[data] wrote {count} {} (seed {seed}) to {path}",
            kind.name()
        );
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
        let problems = healthcare_data::validate::scenario(&v);
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
        healthcare_data::icd10::SOURCE
    );
    if bad > 0 {
        bail!("{bad} of {n} claims are invalid");
    }
    Ok(())
}
