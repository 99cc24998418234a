//! `kubectl cogo logs`: the log of the pod that ran an attempt, from the attempt's start to
//! its end. An agent pod runs many tasks, some at once, so lines of other tasks that ran in
//! the same span are among them.

use std::time::Duration;

use cogo_api::task::TaskAttempt;
use futures::{AsyncBufReadExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::LogParams};

use crate::{Outcome, Target, explain, get_task};

/// `kubectl cogo logs`.
#[derive(clap::Args)]
pub struct Args {
    /// The task.
    name: String,
    /// The attempt, by number (by default the latest).
    #[arg(long)]
    attempt: Option<i32>,
    /// The container (by default the pod's first, the agent).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing while the attempt runs.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Keep each line's timestamp.
    #[arg(long)]
    timestamps: bool,
}

/// Slack around an attempt's times: the pod's clock and the operator's may differ a little.
const SLACK: SignedDuration = SignedDuration::from_secs(1);

/// What to do with a line of a log read with timestamps.
#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    /// Print it (the text, without its timestamp unless asked).
    Print(&'a str),
    /// It was written after the attempt ended: stop reading.
    Stop,
}

/// Judges one line (`<RFC 3339 time> <text>`) against the attempt's end.
pub fn judge(line: &str, end: Option<Timestamp>, timestamps: bool) -> Line<'_> {
    let (time, text) = line.split_once(' ').unwrap_or((line, ""));
    let Ok(at) = time.parse::<Timestamp>() else {
        return Line::Print(line);
    };
    if end.is_some_and(|end| at > end + SLACK) {
        return Line::Stop;
    }
    Line::Print(if timestamps { line } else { text })
}

/// The attempt `number` (else the latest) of the task's status.
pub fn pick(attempts: &[TaskAttempt], number: Option<i32>, task: &str) -> anyhow::Result<TaskAttempt> {
    let found = match number {
        Some(n) => attempts.iter().find(|a| a.number == n),
        None => attempts.last(),
    };
    if let Some(a) = found {
        return Ok(a.clone());
    }
    match (number, attempts.first(), attempts.last()) {
        (None, ..) => anyhow::bail!("the AgentTask {task} has not started; no pod has run it yet"),
        (Some(n), Some(first), Some(last)) => anyhow::bail!(
            "the AgentTask {task} has no attempt {n} in its status, which keeps attempts {} to {}",
            first.number,
            last.number
        ),
        (Some(n), ..) => anyhow::bail!("the AgentTask {task} has no attempt {n}: it has not started"),
    }
}

/// `kubectl cogo logs`.
pub async fn run(target: &Target, a: &Args) -> anyhow::Result<Outcome> {
    let task = get_task(target, &a.name).await?;
    let status = task.status.clone().unwrap_or_default();
    let attempt = pick(&status.attempts, a.attempt, &a.name)?;
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), &target.namespace);
    let pod = match pods.get_opt(&attempt.pod).await {
        Ok(Some(p)) => p,
        Ok(None) => anyhow::bail!(
            "the pod {} that ran attempt {} of {} is gone, and its log with it",
            attempt.pod,
            attempt.number,
            a.name
        ),
        Err(e) => anyhow::bail!("cannot read the pod {}: {}", attempt.pod, explain(&e)),
    };
    let container = match &a.container {
        Some(c) => c.clone(),
        None => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default(),
    };
    let mut end = attempt.finish_time.as_ref().map(|t| t.0);
    let params = LogParams {
        container: Some(container),
        follow: a.follow && end.is_none(),
        since_time: Some(attempt.start_time.0 - SLACK),
        timestamps: true,
        ..Default::default()
    };
    let reader = pods
        .log_stream(&attempt.pod, &params)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the log of the pod {}: {}", attempt.pod, explain(&e)))?;
    let mut lines = reader.lines();
    let mut check = tokio::time::interval(Duration::from_secs(2));
    let mut quiet_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = lines.next() => {
                let Some(line) = line else { break };
                let line = line?;
                match judge(&line, end, a.timestamps) {
                    Line::Print(text) => println!("{text}"),
                    Line::Stop => break,
                }
            }
            _ = check.tick(), if params.follow => {
                // A followed attempt ends when the task says so; lines written until then
                // (and a little after) are still printed.
                if end.is_none() {
                    match target.tasks().get_opt(&a.name).await {
                        Ok(Some(now)) => {
                            let attempts = now.status.map(|s| s.attempts).unwrap_or_default();
                            end = attempts.iter().find(|x| x.number == attempt.number).and_then(|x| x.finish_time.as_ref()).map(|t| t.0);
                        }
                        // Deleted (a TTL of 0, say): the attempt is over.
                        Ok(None) => end = Some(jiff::Timestamp::now()),
                        // A read that failed is tried again at the next tick.
                        Err(_) => {}
                    }
                } else if quiet_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= 2 * SLACK.unsigned_abs() {
                    break;
                }
            }
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::view::tests::at;

    fn attempt(number: i32) -> TaskAttempt {
        TaskAttempt {
            number,
            agent: "a".into(),
            pod: format!("a-{number}"),
            start_time: Time(at(number.into())),
            finish_time: None,
            outcome: None,
            message: None,
        }
    }

    #[test]
    fn lines_after_the_attempt_stop_the_reading() {
        let end = Some("2026-11-30T10:00:05Z".parse().unwrap());
        let line = "2026-11-30T10:00:05.900000000Z {\"msg\":\"task succeeded\"}";
        assert_eq!(
            judge(line, end, false),
            Line::Print("{\"msg\":\"task succeeded\"}")
        );
        assert_eq!(judge(line, end, true), Line::Print(line));
        assert_eq!(
            judge("2026-11-30T10:00:06.100000000Z later", end, false),
            Line::Stop
        );
        assert_eq!(
            judge("2026-11-30T10:00:06.100000000Z later", None, false),
            Line::Print("later")
        );
        assert_eq!(judge("no time here", end, false), Line::Print("no time here"));
    }

    #[test]
    fn attempts_are_picked_by_number_or_the_latest() {
        let attempts = [attempt(3), attempt(4)];
        assert_eq!(pick(&attempts, None, "t").unwrap().number, 4);
        assert_eq!(pick(&attempts, Some(3), "t").unwrap().pod, "a-3");
        let e = pick(&attempts, Some(1), "t").unwrap_err().to_string();
        assert_eq!(
            e,
            "the AgentTask t has no attempt 1 in its status, which keeps attempts 3 to 4"
        );
        let e = pick(&[], None, "t").unwrap_err().to_string();
        assert_eq!(e, "the AgentTask t has not started; no pod has run it yet");
        assert!(pick(&[], Some(1), "t").is_err());
    }
}
