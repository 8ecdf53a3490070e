// commit_top: the filter an intermediate commit puts above the top of the
// range it commits (QEMU's commit_top). It forwards reads and takes no
// permission on its child: while the job copies, the overlay above reads
// the chain as before, and the filter marks where the chain will be cut.
// Opened only by the commit job (blockdev-add refuses the driver).
#include "block/core/filter.h"
#include "block/core/graph.h"

namespace strata {

namespace {

class CommitTopDriver final : public FilterDriver {
 public:
  void child_perm(const Child&, uint64_t, uint64_t, uint64_t* nperm,
                  uint64_t* nshared) const override {
    *nperm = 0;
    *nshared = kPermAll;
  }
};

}  // namespace

void register_commit_top_filter(DriverRegistry& registry) {
  registry.add(DriverSpec{.name = "commit_top",
                          .kind = DriverKind::kFilter,
                          .options = {{"file", OptType::kChild, true}},
                          .create = [] { return std::make_unique<CommitTopDriver>(); },
                          .internal = true});
}

}  // namespace strata
