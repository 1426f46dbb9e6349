//! The benchmark's output: one line per figure, `bench: NAME=VALUE`, as it is measured,
//! and at the end `report.json` with every figure, what was stood in for, and the machine.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::HarnessError;

/// The figures so far.
#[derive(Debug, Default)]
pub struct Report {
    figures: Map<String, Value>,
    notes: Map<String, Value>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records and prints a number.
    pub fn figure(&mut self, name: &str, value: f64) {
        let rounded = (value * 1000.0).round() / 1000.0;
        println!("bench: {name}={rounded}");
        self.figures.insert(name.to_owned(), Value::from(rounded));
    }

    /// Records and prints a word (a phase).
    pub fn text(&mut self, name: &str, value: &str) {
        println!("bench: {name}={value}");
        self.figures.insert(name.to_owned(), Value::from(value));
    }

    /// Records and prints what a part of the benchmark stands in for.
    pub fn note(&mut self, name: &str, text: &str) {
        println!("bench: note.{name}={text}");
        self.notes.insert(name.to_owned(), Value::from(text));
    }

    /// A figure recorded so far.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.figures.get(name)
    }

    /// Writes the report to `path` (its folder is made).
    pub fn write(&self, path: &Path) -> Result<(), HarnessError> {
        let document = serde_json::json!({
            "figures": self.figures,
            "notes": self.notes,
            "machine": machine(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| HarnessError(format!("{}: {e}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(&document)
            .map_err(|e| HarnessError(format!("report: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
        println!("bench: report={}", path.display());
        Ok(())
    }
}

/// The machine: CPU model and count, memory, kernel, etcd's version.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| {
        l.strip_prefix("model name")?
            .split_once(':')
            .map(|(_, m)| m.trim().to_owned())
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(str::to_owned);
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "memory": memory,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|k| k.trim().to_owned()),
        "etcd": etcd,
    })
}
