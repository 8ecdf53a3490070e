#include "jobs/job_types.h"

namespace strata {

namespace {

// QEMU's JobSTT: kTransitions[from][to].
//                                          U  C  R  P  Y  S  W  D  X  E  N
constexpr bool kTransitions[kJobStatusCount][kJobStatusCount] = {
    /* undefined */ {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    /* created   */ {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    /* running   */ {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    /* paused    */ {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    /* ready     */ {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    /* standby   */ {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    /* waiting   */ {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    /* pending   */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* aborting  */ {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* concluded */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    /* null      */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

// QEMU's JobVerbTable: kVerbs[verb][status].
//                                     U  C  R  P  Y  S  W  D  X  E  N
constexpr bool kVerbs[kJobVerbCount][kJobStatusCount] = {
    /* cancel    */ {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    /* pause     */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* resume    */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* set-speed */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* complete  */ {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    /* dismiss   */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
    /* finalize  */ {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    /* change    */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
};

}  // namespace

const char* to_string(JobStatus status) {
  static constexpr const char* kNames[] = {"undefined", "created",   "running", "paused",
                                           "ready",     "standby",   "waiting", "pending",
                                           "aborting",  "concluded", "null"};
  return kNames[static_cast<int>(status)];
}

const char* to_string(JobVerb verb) {
  static constexpr const char* kNames[] = {"cancel",   "pause",   "resume",   "set-speed",
                                           "complete", "dismiss", "finalize", "change"};
  return kNames[static_cast<int>(verb)];
}

bool transition_allowed(JobStatus from, JobStatus to) {
  return kTransitions[static_cast<int>(from)][static_cast<int>(to)];
}

bool verb_allowed(JobVerb verb, JobStatus status) {
  return kVerbs[static_cast<int>(verb)][static_cast<int>(status)];
}

std::optional<OnError> parse_on_error(std::string_view name) {
  if (name == "report") return OnError::kReport;
  if (name == "ignore") return OnError::kIgnore;
  if (name == "enospc") return OnError::kEnospc;
  if (name == "stop") return OnError::kStop;
  if (name == "auto") return OnError::kAuto;
  return std::nullopt;
}

const char* to_string(OnError policy) {
  static constexpr const char* kNames[] = {"report", "ignore", "enospc", "stop", "auto"};
  return kNames[static_cast<int>(policy)];
}

const char* to_string(ErrorAction action) {
  static constexpr const char* kNames[] = {"ignore", "report", "stop"};
  return kNames[static_cast<int>(action)];
}

const char* to_string(IoStatus status) {
  static constexpr const char* kNames[] = {"ok", "failed", "nospace"};
  return kNames[static_cast<int>(status)];
}

}  // namespace strata
