// The enumerations of the job core, with QEMU's QAPI names: JobStatus,
// JobVerb, the error policies of block jobs (BlockdevOnError), what a
// policy decided (BlockErrorAction), io-status (BlockDeviceIoStatus), and
// the events a job emits (JobEvent, delivered to JobRegistry listeners).
//
// Contract: to_string() gives the QAPI spelling; transition_allowed() is
// QEMU's JobSTT and verb_allowed() its JobVerbTable.
// Thread rules: pure data and functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace strata {

class Job;

enum class JobStatus {
  kUndefined,
  kCreated,
  kRunning,
  kPaused,
  kReady,
  kStandby,
  kWaiting,
  kPending,
  kAborting,
  kConcluded,
  kNull,
};
constexpr int kJobStatusCount = 11;

enum class JobVerb { kCancel, kPause, kResume, kSetSpeed, kComplete, kDismiss, kFinalize, kChange };
constexpr int kJobVerbCount = 8;

const char* to_string(JobStatus status);
const char* to_string(JobVerb verb);
bool transition_allowed(JobStatus from, JobStatus to);
bool verb_allowed(JobVerb verb, JobStatus status);

// on-error, on-source-error, on-target-error.
enum class OnError { kReport, kIgnore, kEnospc, kStop, kAuto };
std::optional<OnError> parse_on_error(std::string_view name);
const char* to_string(OnError policy);

// BLOCK_JOB_ERROR's `action`.
enum class ErrorAction { kIgnore, kReport, kStop };
const char* to_string(ErrorAction action);

// query-block-jobs' `io-status`.
enum class IoStatus { kOk, kFailed, kNoSpace };
const char* to_string(IoStatus status);

enum class JobEventKind {
  kStatusChange,  // JOB_STATUS_CHANGE
  kReady,         // BLOCK_JOB_READY (block jobs)
  kPending,       // BLOCK_JOB_PENDING (block jobs, manual finalize)
  kCompleted,     // BLOCK_JOB_COMPLETED (block jobs)
  kCancelled,     // BLOCK_JOB_CANCELLED (block jobs)
  kError,         // BLOCK_JOB_ERROR (block jobs)
};

// One event. `job` is valid during the listener call only; read its state
// (status, progress, speed, error) then.
struct JobEvent {
  JobEventKind kind;
  const Job& job;
  JobStatus status;                           // kStatusChange: the new status
  bool is_read = false;                       // kError: operation read/write
  ErrorAction action = ErrorAction::kReport;  // kError
};

}  // namespace strata
