// The C ABI (include/strata/strata.h) over Engine and Drive.
#include "strata/strata.h"

#include <new>
#include <string>

#include "strata/drive.h"

struct strata_engine {
  strata::Engine engine;
  std::string error;
};

struct strata_drive {
  strata_engine* owner;
  std::unique_ptr<strata::Drive> drive;
  std::string error;
};

namespace {

int report(std::string* slot, const strata::Result<void>& r) {
  if (r) {
    slot->clear();
    return 0;
  }
  *slot = r.error().message;
  return -r.error().code;
}

}  // namespace

extern "C" {

strata_engine* strata_engine_new(void) { return new (std::nothrow) strata_engine(); }

void strata_engine_free(strata_engine* e) {
  if (!e) return;
  e->engine.run(e->engine.co_close_all());
  delete e;
}

const char* strata_engine_error(const strata_engine* e) { return e->error.c_str(); }

int strata_drive_open(strata_engine* e, const char* json_options, int writable,
                      strata_drive** out) {
  *out = nullptr;
  nlohmann::json options = nlohmann::json::parse(json_options, nullptr, /*allow_exceptions=*/false);
  if (options.is_discarded()) {
    e->error = "JSON parse error in options";
    return -EINVAL;
  }
  auto drive = e->engine.run(strata::Drive::co_open(
      e->engine, std::move(options), {.writable = writable != 0, .user = "C API drive"}));
  if (!drive) {
    e->error = drive.error().message;
    return -drive.error().code;
  }
  e->error.clear();
  *out = new strata_drive{e, std::move(*drive), {}};
  return 0;
}

int strata_drive_read(strata_drive* d, uint64_t offset, void* buf, size_t len) {
  return report(&d->error, d->drive->read(offset, {static_cast<uint8_t*>(buf), len}));
}

int strata_drive_write(strata_drive* d, uint64_t offset, const void* buf, size_t len) {
  return report(&d->error, d->drive->write(offset, {static_cast<const uint8_t*>(buf), len}));
}

int strata_drive_write_zeroes(strata_drive* d, uint64_t offset, uint64_t len) {
  return report(&d->error, d->drive->write_zeroes(offset, len));
}

int strata_drive_discard(strata_drive* d, uint64_t offset, uint64_t len) {
  return report(&d->error, d->drive->discard(offset, len));
}

int strata_drive_flush(strata_drive* d) { return report(&d->error, d->drive->flush()); }

uint64_t strata_drive_size(const strata_drive* d) { return d->drive->size(); }

const char* strata_drive_error(const strata_drive* d) { return d->error.c_str(); }

void strata_drive_close(strata_drive* d) {
  if (!d) return;
  d->drive->close();
  delete d;
}

}  // extern "C"
