# Finds the third-party packages. Debian 12 provides all of them (scripts/install-deps); with
# SILO_BUILD_SERVICES=OFF only Abseil and GoogleTest are needed,
# which scripts/device-deps brings to a machine without Debian's development packages.
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)

if(SILO_BUILD_SERVICES)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_program(SILO_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
  find_package(OpenSSL 3 REQUIRED)
  find_package(RocksDB CONFIG REQUIRED)
  find_package(OpenMP REQUIRED)  # libfaiss.a links OpenMP
  find_package(faiss CONFIG REQUIRED)
  find_package(yaml-cpp CONFIG REQUIRED)
  find_package(nlohmann_json CONFIG REQUIRED)
  find_package(CLI11 CONFIG REQUIRED)
endif()
