// zlib (Debian: zlib1g-dev), for reading gzip-compressed datasets.
#include <zlib.h>
