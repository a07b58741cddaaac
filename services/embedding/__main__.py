from services.embedding.main import main

main()
