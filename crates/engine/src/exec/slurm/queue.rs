//! Reading what Slurm's tools print: `squeue` lines (with task ranges), `scontrol show job`
//! fields and the job id `sbatch --parsable` prints.

use std::collections::HashMap;

use super::SlurmError;

/// One line of `squeue -o '%F|%K|%T|%r'`: a task of an array job (or a range of pending
/// tasks, when the queue did not expand it).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub job: String,
    pub tasks: Vec<usize>,
    pub state: String,
    pub reason: String,
}

/// Parses `squeue -h -r -o '%F|%K|%T|%r'`, expanding task ranges like `[3-5,7%2]`; lines it
/// cannot read are skipped (the queue is re-read every poll).
pub fn parse_squeue(text: &str) -> Vec<QueueEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(4, '|');
            let job = parts.next()?.trim().to_string();
            let tasks = parse_task_ids(parts.next()?.trim())?;
            let state = parts.next()?.trim().to_string();
            let reason = parts.next().unwrap_or("").trim().to_string();
            (!job.is_empty()).then_some(QueueEntry {
                job,
                tasks,
                state,
                reason,
            })
        })
        .collect()
}

fn parse_task_ids(field: &str) -> Option<Vec<usize>> {
    if field == "N/A" || field == "(null)" {
        return Some(Vec::new());
    }
    let inner = field.trim_start_matches('[').trim_end_matches(']');
    let inner = inner.split('%').next().unwrap_or(inner);
    let mut ids = Vec::new();
    for part in inner.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                ids.extend(a..=b);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    Some(ids)
}

/// The fields of `scontrol show job -o` (one line of `Key=Value` pairs).
pub fn parse_scontrol(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `sbatch --parsable` prints `<id>` or `<id>;<cluster>`.
pub(super) fn parse_job_id(output: &str) -> Result<String, SlurmError> {
    let id = output.trim().split(';').next().unwrap_or("").trim();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(SlurmError::BadJobId {
            output: output.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_expand_task_ranges() {
        let text = "12|3|RUNNING|None\n12|[4-6,9%2]|PENDING|JobArrayTaskLimit\n13|N/A|PENDING|Dependency\n\ngarbage\n";
        let entries = parse_squeue(text);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(
            entries[0],
            QueueEntry {
                job: "12".into(),
                tasks: vec![3],
                state: "RUNNING".into(),
                reason: "None".into()
            }
        );
        assert_eq!(entries[1].tasks, vec![4, 5, 6, 9]);
        assert_eq!(entries[1].reason, "JobArrayTaskLimit");
        assert!(entries[2].tasks.is_empty());
    }

    #[test]
    fn scontrol_fields_are_read() {
        let f = parse_scontrol(
            "JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=cbound:p:s JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0",
        );
        assert_eq!(f["JobState"], "FAILED");
        assert_eq!(f["Reason"], "NonZeroExitCode");
        assert_eq!(f["ExitCode"], "3:0");
    }

    #[test]
    fn job_ids_from_parsable_output() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("123;cluster\n").unwrap(), "123");
        assert!(parse_job_id("sbatch: error").is_err());
    }
}
