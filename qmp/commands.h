// Registration functions of the command groups, called by
// register_all_commands() (qmp/commands.cc). An area adding commands
// declares its function here or in its own header and adds one call there.
// Thread rules: loop-thread only, before serving starts.
#pragma once

#include "qmp/registry.h"

namespace strata::qmp {

class QmpContext;

// blockdev-add/del/reopen, query-named-block-nodes, query-block,
// query-blockstats, block_resize, blockdev-create (qmp/block_commands.cc).
void register_block_commands(QmpContext& ctx);
// blockdev-reopen (qmp/reopen.cc) and blockdev-create (qmp/create.cc),
// called by register_block_commands().
void register_reopen_command(QmpContext& ctx);
void register_create_command(QmpContext& ctx);
// blockdev-snapshot, blockdev-snapshot-sync and their transaction actions
// (qmp/snapshot.cc).
void register_snapshot_commands(CommandRegistry& registry);
// Internal snapshots and change-backing-file (qmp/image_commands.cc).
void register_image_commands(CommandRegistry& registry);
// block-commit and block-stream (qmp/commands_block_jobs.cc).
void register_block_job_commands(QmpContext& ctx);
void register_mirror_commands(QmpContext& ctx);
void register_backup_commands(QmpContext& ctx);

}  // namespace strata::qmp
