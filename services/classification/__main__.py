from services.classification.main import main

main()
