// Optional launcher for Iceberg's REST catalog fixture server that binds one address (default
// 127.0.0.1) instead of 0.0.0.0.
//
// org.apache.iceberg.rest.RESTCatalogServer (iceberg-open-api test fixtures) builds its Jetty
// server with `new Server(port)`, which always listens on every interface, and has no host setting.
// This class reuses the fixture's own pieces (the same CATALOG_* environment handling, the same
// backend catalog defaults and the same RESTServerCatalogAdapter) and only replaces the connector.
//
// Extra settings, read from the same catalog configuration as rest.port:
//   CATALOG_REST_HOST  (rest.host)  address to bind, default 127.0.0.1
//   CATALOG_REST_PORT  (rest.port)  port, default 8181
//
// Run without a build step (Java 11+ source-file mode, compiles in memory, ~1 s extra at start):
//   java -cp '.lakehouse/lib/iceberg-rest/*' infra/iceberg-rest/LoopbackRESTCatalogServer.java
// or compile once and run the class:
//   javac -cp '.lakehouse/lib/iceberg-rest/*' -d .lakehouse/lib/iceberg-rest-launcher \
//       infra/iceberg-rest/LoopbackRESTCatalogServer.java
//   java -cp '.lakehouse/lib/iceberg-rest-launcher:.lakehouse/lib/iceberg-rest/*' LoopbackRESTCatalogServer

import java.lang.reflect.Constructor;
import java.lang.reflect.Method;
import java.util.Map;
import org.apache.iceberg.rest.RESTCatalogAdapter;
import org.apache.iceberg.rest.RESTCatalogServlet;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.gzip.GzipHandler;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class LoopbackRESTCatalogServer {
  private static final String PKG = "org.apache.iceberg.rest.";

  public static void main(String[] args) throws Exception {
    // The fixture's classes are package-private; reach them reflectively (classpath, unnamed module).
    Class<?> serverClass = Class.forName(PKG + "RESTCatalogServer");
    Constructor<?> serverCtor = serverClass.getDeclaredConstructor();
    serverCtor.setAccessible(true);
    Object fixture = serverCtor.newInstance();

    Method initBackend = serverClass.getDeclaredMethod("initializeBackendCatalog");
    initBackend.setAccessible(true);
    Object context = initBackend.invoke(fixture);

    Class<?> contextClass = Class.forName(PKG + "RESTCatalogServer$CatalogContext");
    Method configuration = contextClass.getDeclaredMethod("configuration");
    configuration.setAccessible(true);
    @SuppressWarnings("unchecked")
    Map<String, String> conf = (Map<String, String>) configuration.invoke(context);

    Class<?> adapterClass = Class.forName(PKG + "RESTServerCatalogAdapter");
    Constructor<?> adapterCtor = adapterClass.getDeclaredConstructor(contextClass);
    adapterCtor.setAccessible(true);
    RESTCatalogAdapter adapter = (RESTCatalogAdapter) adapterCtor.newInstance(context);

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(new ServletHolder(new RESTCatalogServlet(adapter)), "/*");
    handler.insertHandler(new GzipHandler());

    String host = conf.getOrDefault("rest.host", "127.0.0.1");
    int port = Integer.parseInt(conf.getOrDefault("rest.port", "8181"));

    Server http = new Server();
    ServerConnector connector = new ServerConnector(http);
    connector.setHost(host);
    connector.setPort(port);
    http.addConnector(connector);
    http.setHandler(handler);
    // Finish in-flight requests on SIGTERM instead of dropping them.
    http.setStopAtShutdown(true);
    http.setStopTimeout(5_000);
    http.start();
    http.join();
  }
}
