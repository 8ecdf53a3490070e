/* Exercises the C ABI from C: open a raw image, write, read back, errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strata/strata.h"

#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                       \
    }                                                                \
  } while (0)

int main(void) {
  char path[] = "/tmp/strata-c-abi-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK(ftruncate(fd, 1 << 20) == 0);
  close(fd);

  strata_engine* engine = strata_engine_new();
  CHECK(engine != NULL);
  char options[512];
  snprintf(options, sizeof(options),
           "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", path);
  strata_drive* drive = NULL;
  CHECK(strata_drive_open(engine, options, 1, &drive) == 0);
  CHECK(strata_drive_size(drive) == (1 << 20));

  char out[4096], in[4096];
  memset(out, 0x5a, sizeof(out));
  CHECK(strata_drive_write(drive, 8192, out, sizeof(out)) == 0);
  CHECK(strata_drive_flush(drive) == 0);
  CHECK(strata_drive_read(drive, 8192, in, sizeof(in)) == 0);
  CHECK(memcmp(in, out, sizeof(in)) == 0);

  CHECK(strata_drive_read(drive, (1 << 20) - 100, in, sizeof(in)) == -EINVAL);
  CHECK(strstr(strata_drive_error(drive), "out of range") != NULL);

  strata_drive* second = NULL;
  CHECK(strata_drive_open(engine, "{\"driver\": \"nope\"}", 1, &second) == -EINVAL);
  CHECK(strcmp(strata_engine_error(engine), "Parameter 'driver' does not accept value 'nope'") == 0);
  CHECK(strata_drive_open(engine, "{not json", 1, &second) == -EINVAL);

  strata_drive_close(drive);
  strata_engine_free(engine);

  FILE* f = fopen(path, "rb");
  CHECK(f != NULL);
  CHECK(fseek(f, 8192, SEEK_SET) == 0);
  CHECK(fread(in, 1, sizeof(in), f) == sizeof(in));
  fclose(f);
  CHECK(memcmp(in, out, sizeof(in)) == 0);
  unlink(path);
  printf("1 passed, 0 failed\n");
  return 0;
}
