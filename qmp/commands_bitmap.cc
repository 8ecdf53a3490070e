// Dirty bitmap QMP commands and transaction actions over block/bitmap/bitmap_ops.h.
#include "qmp/commands_bitmap.h"

#include <cstdint>

#include "block/bitmap/bitmap_ops.h"
#include "block/core/graph.h"
#include "qmp/block_info.h"
#include "qmp/context.h"
#include "qmp/transaction.h"

namespace strata::qmp {

namespace {

Graph& graph_of(QmpContext& ctx) {
  return ctx.engine().graph();
}

Result<BitmapAddOptions> add_options(const json& a) {
  BitmapAddOptions o;
  if (a.contains("granularity")) {
    const json& g = a["granularity"];
    bool in_range = g.is_number_unsigned() || (g.is_number_integer() && g.get<int64_t>() >= 0);
    if (!in_range || g.get<uint64_t>() > UINT32_MAX) {
      return Error{EINVAL, "Parameter 'granularity' expects uint32_t"};
    }
    o.granularity = g.get<uint64_t>();
  }
  o.persistent = a.value("persistent", false);
  o.disabled = a.value("disabled", false);
  return o;
}

std::vector<BitmapSource> merge_sources(const json& list) {
  std::vector<BitmapSource> out;
  for (const json& s : list) {
    if (s.is_string()) {
      out.push_back({"", s.get<std::string>()});
    } else {
      out.push_back({s.value("node", ""), s.value("name", "")});
    }
  }
  return out;
}

// One class per action; the standalone commands run them alone.
class AddAction final : public Action {
 public:
  AddAction(QmpContext& ctx, json d) : ctx_(ctx), d_(std::move(d)) {}
  Task<Result<void>> co_prepare() override {
    STRATA_CO_TRY_ASSIGN(auto options, add_options(d_));
    STRATA_CO_TRY_ASSIGN(added_,
                         co_await co_add_bitmap(graph_of(ctx_), d_["node"], d_["name"], options));
    co_return Result<void>{};
  }
  Task<void> co_abort() override {
    if (added_) added_->set().release(added_);
    co_return;
  }

 private:
  QmpContext& ctx_;
  json d_;
  DirtyBitmap* added_ = nullptr;
};

class RemoveAction final : public Action {
 public:
  RemoveAction(QmpContext& ctx, json d) : ctx_(ctx), d_(std::move(d)) {}
  Task<Result<void>> co_prepare() override {
    STRATA_CO_TRY_ASSIGN(bitmap_,
                         co_await co_remove_bitmap(graph_of(ctx_), d_["node"], d_["name"], false));
    bitmap_->set_busy(true);
    co_return Result<void>{};
  }
  Task<void> co_commit() override {
    bitmap_->set_busy(false);
    bitmap_->set().release(std::exchange(bitmap_, nullptr));
    co_return;
  }
  Task<void> co_abort() override {
    if (bitmap_) bitmap_->set_busy(false);
    co_return;
  }

 private:
  QmpContext& ctx_;
  json d_;
  DirtyBitmap* bitmap_ = nullptr;
};

// clear, merge and populate: the previous bits come back on abort.
class RestorableAction : public Action {
 public:
  Task<void> co_abort() override {
    if (bitmap_ && backup_) restore_bitmap(*bitmap_, std::move(*backup_));
    co_return;
  }

 protected:
  DirtyBitmap* bitmap_ = nullptr;
  std::optional<HBitmap> backup_;
};

class ClearAction final : public RestorableAction {
 public:
  ClearAction(QmpContext& ctx, json d) : ctx_(ctx), d_(std::move(d)) {}
  Task<Result<void>> co_prepare() override {
    STRATA_CO_TRY_ASSIGN(bitmap_, clear_bitmap(graph_of(ctx_), d_["node"], d_["name"], &backup_));
    co_return Result<void>{};
  }

 private:
  QmpContext& ctx_;
  json d_;
};

class MergeAction final : public RestorableAction {
 public:
  MergeAction(QmpContext& ctx, json d) : ctx_(ctx), d_(std::move(d)) {}
  Task<Result<void>> co_prepare() override {
    STRATA_CO_TRY_ASSIGN(bitmap_, merge_bitmaps(graph_of(ctx_), d_["node"], d_["target"],
                                                merge_sources(d_["bitmaps"]), &backup_));
    co_return Result<void>{};
  }

 private:
  QmpContext& ctx_;
  json d_;
};

class PopulateAction final : public RestorableAction {
 public:
  PopulateAction(QmpContext& ctx, json d) : ctx_(ctx), d_(std::move(d)) {}
  Task<Result<void>> co_prepare() override {
    auto found = lookup_bitmap(graph_of(ctx_), d_["node"], d_["name"]);
    if (found) backup_.emplace((*found)->bits());
    STRATA_CO_TRY_ASSIGN(bitmap_, co_await co_populate_bitmap(graph_of(ctx_), d_["node"],
                                                              d_["name"], d_.value("base", "")));
    co_return Result<void>{};
  }

 private:
  QmpContext& ctx_;
  json d_;
};

class EnableAction final : public Action {
 public:
  EnableAction(QmpContext& ctx, json d, bool enable)
      : ctx_(ctx), d_(std::move(d)), enable_(enable) {}
  Task<Result<void>> co_prepare() override {
    auto found = lookup_bitmap(graph_of(ctx_), d_["node"], d_["name"]);
    if (found) was_enabled_ = (*found)->enabled();
    STRATA_CO_TRY_ASSIGN(bitmap_, enable_bitmap(graph_of(ctx_), d_["node"], d_["name"], enable_));
    co_return Result<void>{};
  }
  Task<void> co_abort() override {
    if (bitmap_) bitmap_->set_enabled(was_enabled_);
    co_return;
  }

 private:
  QmpContext& ctx_;
  json d_;
  bool enable_;
  bool was_enabled_ = false;
  DirtyBitmap* bitmap_ = nullptr;
};

template <typename A>
ActionFactory factory() {
  return [](QmpContext& ctx, json data, const TransactionOptions&) -> std::unique_ptr<Action> {
    return std::make_unique<A>(ctx, std::move(data));
  };
}

ActionFactory enable_factory(bool enable) {
  return
      [enable](QmpContext& ctx, json data, const TransactionOptions&) -> std::unique_ptr<Action> {
        return std::make_unique<EnableAction>(ctx, std::move(data), enable);
      };
}

// A free coroutine (parameters by value): a capturing lambda must not be
// the coroutine, its closure may be gone before the frame is.
Task<Result<json>> co_run_alone(ActionFactory make, QmpContext& ctx, json args) {
  STRATA_CO_TRY(co_await co_run_single_action(make(ctx, std::move(args), {})));
  co_return json::object();
}

CommandHandler single(ActionFactory make) {
  return [make](QmpContext& ctx, json args) { return co_run_alone(make, ctx, std::move(args)); };
}

Task<Result<json>> co_sha256(QmpContext& ctx, json args) {
  STRATA_CO_TRY_ASSIGN(std::string digest,
                       bitmap_sha256(graph_of(ctx), args["node"], args["name"]));
  co_return json{{"sha256", digest}};
}

void declare_types(Schema& s) {
  s.add_object("BlockDirtyBitmap", {{"node", "str"}, {"name", "str"}});
  s.add_object("BlockDirtyBitmapAdd", {{"node", "str"},
                                       {"name", "str"},
                                       {"granularity", "uint32", true},
                                       {"persistent", "bool", true},
                                       {"disabled", "bool", true}});
  s.add_alternate("BlockDirtyBitmapOrStr", {"str", "BlockDirtyBitmap"});
  s.add_object("BlockDirtyBitmapMerge",
               {{"node", "str"}, {"target", "str"}, {"bitmaps", "[BlockDirtyBitmapOrStr]"}});
  s.add_object("BlockDirtyBitmapPopulate",
               {{"node", "str"}, {"name", "str"}, {"base", "str", true}});
  s.add_object("BlockDirtyBitmapSha256", {{"sha256", "str"}});
}

}  // namespace

void register_bitmap_commands(QmpContext& ctx) {
  CommandRegistry& r = ctx.registry();
  declare_types(r.schema());
  struct Entry {
    const char* name;
    const char* type;
    ActionFactory make;
  };
  const Entry entries[] = {
      {"block-dirty-bitmap-add", "BlockDirtyBitmapAdd", factory<AddAction>()},
      {"block-dirty-bitmap-remove", "BlockDirtyBitmap", factory<RemoveAction>()},
      {"block-dirty-bitmap-clear", "BlockDirtyBitmap", factory<ClearAction>()},
      {"block-dirty-bitmap-enable", "BlockDirtyBitmap", enable_factory(true)},
      {"block-dirty-bitmap-disable", "BlockDirtyBitmap", enable_factory(false)},
      {"block-dirty-bitmap-merge", "BlockDirtyBitmapMerge", factory<MergeAction>()},
      {"block-dirty-bitmap-populate", "BlockDirtyBitmapPopulate", factory<PopulateAction>()},
  };
  for (const Entry& e : entries) {
    r.add_action({e.name, e.type, false, e.make});
    r.add({.name = e.name, .boxed = e.type, .handler = single(e.make)});
  }
  r.add({.name = "x-debug-block-dirty-bitmap-sha256",
         .boxed = "BlockDirtyBitmap",
         .returns = "BlockDirtyBitmapSha256",
         .handler = co_sha256});
  ctx.service<BlockInfoExtensions>().extenders.push_back([](const Node& node, json& info) {
    json bitmaps = query_bitmaps(node);
    if (!bitmaps.is_null()) info["dirty-bitmaps"] = std::move(bitmaps);
  });
}

}  // namespace strata::qmp
