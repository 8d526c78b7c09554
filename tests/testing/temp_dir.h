// A fresh directory under $TEST_TMPDIR (or /tmp), removed with its contents on destruction.
#ifndef SILO_TESTS_TESTING_TEMP_DIR_H_
#define SILO_TESTS_TESTING_TEMP_DIR_H_

#include <filesystem>
#include <string>
#include <string_view>

namespace silo::testing {

class TempDir {
 public:
  TempDir();  // aborts the test binary if no directory can be made
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }
  // Writes `contents` to `name` inside the directory and returns the full path.
  std::string WriteFile(std::string_view name, std::string_view contents) const;

 private:
  std::filesystem::path path_;
};

}  // namespace silo::testing

#endif  // SILO_TESTS_TESTING_TEMP_DIR_H_
